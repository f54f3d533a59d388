"""Stale means the training code changed: the code fingerprint (runner/records/fingerprint.py),
what the store keeps of it, and the rule that falls back to git commits for runs recorded before it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, write_study
from runner.plan.diff import state_of, stale_reason
from runner.records.fingerprint import changes, current, source_hash

MODEL = '''"""A module."""

def forward(x):
    """Double it."""
    return 2 * x  # the whole computation
'''


def test_comments_docstrings_and_layout_leave_the_hash_alone_and_code_changes_it():
    same = MODEL.replace("# the whole computation", "# reworded").replace('"""Double it."""', '"""Twice x."""')
    assert source_hash(same.replace("2 * x", "2*x")) == source_hash(MODEL)
    assert source_hash(MODEL.replace("2 * x", "3 * x")) != source_hash(MODEL)
    assert source_hash(MODEL + "\n\ndef extra():\n    return 1\n") != source_hash(MODEL)


def test_the_installed_fingerprint_covers_models_datasets_and_training_and_lists_what_changed():
    fp = current()
    assert {"architectures/vit/model.py", "datasets/_registry.py", "runner/train/loop.py"} <= set(fp.files)
    assert not any(f.startswith(("runner/cli/", "runner/study/", "analysis/")) for f in fp.files)
    assert fp.libraries["torch"] == "2.14.1"
    recorded = fp.as_json() | {"files": fp.files | {"architectures/vit/model.py": "0" * 16, "gone.py": "1" * 16},
                               "libraries": fp.libraries | {"timm": "0.0"}}
    assert changes(recorded, fp) == ["architectures/vit/model.py", "gone.py", f"timm 0.0 -> {fp.libraries['timm']}"]
    assert changes(None, fp) == []


class Rec:
    def __init__(self, state, commit, code=None):
        self.state, self.git_commit, self.code_hash = state, commit, code


def test_stale_is_another_fingerprint_and_runs_without_one_fall_back_to_the_commit_rule():
    assert state_of(Rec("done", "old", code="abc"), "new", "abc") == "done"  # another commit, same code
    assert state_of(Rec("done", "same", code="abc"), "same", "def") == "stale"  # a dirty edit of the code
    assert state_of(Rec("failed", "same", code="abc"), "same", "def") == "failed"
    assert state_of(Rec("done", "old"), "new", "abc") == "stale"  # recorded before fingerprints
    assert state_of(Rec("done", "new"), "new", "abc") == "done"
    assert "fingerprint abc, now def" in stale_reason(Rec("done", "x", code="abc"), "x", "def")
    assert stale_reason(Rec("done", "0123456789abcdef"), "fedcba9876543210", "abc").startswith(
        "recorded before code fingerprints, so judged by its git commit: done at 0123456789ab, HEAD is fedcba987654")


# ---------------------------------------------------------------- end to end, on a copy of the code


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def _runner(code: Path, study: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(code)}  # the copy's packages, not the installed ones
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=study, env=env, capture_output=True,
                          text=True, timeout=300)


ONE = ("--where", "architecture=cnn", "--where", "seed=0")  # one run of the tiny study


def _state(code: Path, study: Path) -> str:
    proc = _runner(code, study, "plan", *ONE)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.e2e
def test_a_notes_commit_keeps_runs_done_and_a_model_edit_makes_them_stale_dirty_or_committed(tmp_path):
    """The study in its own repository, the code in another (a copy of this one's packages)."""
    code = tmp_path / "code"
    for pkg in ("runner", "architectures", "datasets", "analysis"):
        shutil.copytree(ROOT / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    _git(code, "init", "-q")
    _git(code, "add", ".")
    _git(code, "commit", "-qm", "code")
    study = tmp_path / "study"
    write_study(study, epochs=1)
    _git(study, "init", "-q")
    _git(study, "add", ".")
    _git(study, "commit", "-qm", "study")
    launched = _runner(code, study, "launch", *ONE)
    assert launched.returncode == 0, launched.stderr
    assert "1 run(s): 1 done" in _state(code, study)

    (study / "NOTES.md").write_text("what we saw\n")  # a commit that does not touch the code
    _git(study, "add", ".")
    _git(study, "commit", "-qm", "notes")
    model = code / "architectures" / "cnn" / "model.py"
    model.write_text(model.read_text() + "\n# a comment changes nothing\n")
    out = _state(code, study)
    assert "1 run(s): 1 done" in out and "stale" not in out, out

    model.write_text(model.read_text() + "\n\ndef _unused():\n    return 1\n")  # dirty: not committed
    out = _state(code, study)
    assert "1 run(s): 1 stale" in out and "changed: architectures/cnn/model.py" in out, out
    rerun = _runner(code, study, "launch", *ONE)
    assert "1 stale (trained with other code" in rerun.stdout and "--rerun stale" in rerun.stdout, rerun.stdout

    _git(code, "commit", "-qam", "edit")  # committed: still other code than the run's
    assert "1 run(s): 1 stale" in _state(code, study)
    again = _runner(code, study, "launch", "--rerun", "stale", *ONE)
    assert again.returncode == 0 and "(0 were already done)" in again.stdout, again.stdout
    assert "1 run(s): 1 done" in _state(code, study)
