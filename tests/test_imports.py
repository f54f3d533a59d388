"""Commands that do not train never import torch, torchvision, timm or wandb (3-5 s each here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import write_study
from studies import study_toml

HEAVY = ("torch", "torchvision", "timm", "wandb")

PROBE = """
import sys
from runner.cli.app import app
sys.argv = ["runner", *{args!r}]
try:
    app(prog_name="runner")
except SystemExit:
    pass
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


@pytest.fixture(scope="module")
def study_with_results(tmp_path_factory):
    """A study whose store holds a finished run, so status/report/show have real work to do."""
    d = tmp_path_factory.mktemp("imports")
    write_study(d, study_toml(extra='[[probe]]\nname = "speed"\nkind = "inference_time"\n'))
    from runner.commands import load
    from runner.probes.worker import save
    from runner.records.runfolder import RunFolder
    from runner.launch.scheduler import run_json

    sel = load(d / "experiments.toml")
    run, probe = sel.runs[0], sel.study.probes[0]
    f = RunFolder(sel.study.runs_dir / run.id)
    f.create(run_json(run, sel.study))
    f.finish(f.start_attempt({}), {"test_acc": 0.5})
    task = {"name": probe.name, "kind": probe.kind, "key": probe.key, "settings": probe.settings,
            "run_folder": str(f.path)}
    summary = {"device": "cpu", "hardware": "cpu", "precision": "fp32",
               "batches": [{"batch_size": 1, "images_per_s": 100.0, "latency_ms": 10.0}]}
    save(f.path / probe.folder, task, summary, {}, 1.0, "cpu", {})
    return d, run.id


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plan"], ["plan", "--json"], ["status"], ["status", "--json"],
                                  ["report"], ["show", "RUN"], ["sync"], ["data", "list"],
                                  ["probe", "--help"], ["report", "--table", "probe_speed"]], ids=" ".join)
def test_command_does_not_import_heavy_libraries(study_with_results, args):
    d, rid = study_with_results
    args = [rid if a == "RUN" else a for a in args]
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], cwd=d, capture_output=True,
                         text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    line = [l for l in out.stdout.splitlines() if l.startswith("HEAVY:")]
    assert line == ["HEAVY:"], out.stdout[-2000:]


@pytest.mark.parametrize("words", ["runner report --figure ", "runner plan --where ", "runner tune "], ids=str.strip)
def test_shell_completion_does_not_import_heavy_libraries(study_with_results, words):
    d, _ = study_with_results
    env = {**os.environ, "_RUNNER_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()))}
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=[], heavy=HEAVY)], cwd=d, env=env,
                         capture_output=True, text=True, timeout=120)
    assert not out.stderr, out.stderr
    assert out.stdout.splitlines()[-1] == "HEAVY:" and len(out.stdout.splitlines()) > 1, out.stdout[-2000:]


@pytest.mark.parametrize("args", [["plan"], ["plan", "--json"], ["status"], ["status", "--json"]], ids=" ".join)
def test_reading_an_up_to_date_sqlite_store_does_not_import_sqlalchemy(study_with_results, args):
    """SQLAlchemy costs 0.4 s of a `runner status` here: on SQLite, a command that finds nothing new
    in the run folders reads the store through the sqlite3 module (runner/records/store.py)."""
    d, _ = study_with_results
    sync = subprocess.run([sys.executable, "-m", "runner", "sync"], cwd=d, capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=("sqlalchemy",))], cwd=d,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    assert [l for l in out.stdout.splitlines() if l.startswith("HEAVY:")] == ["HEAVY:"], out.stdout[-2000:]
    if args[0] == "status":
        assert "1 done" in out.stdout or '"done": 1' in out.stdout, out.stdout[-2000:]
