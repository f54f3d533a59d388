"""``runner tune``: a real Optuna study in the study's SQLite database, trials trained by real
worker processes on digits, pruned through the run folder, resumed after ``kill -9``, and
written back into the study file with ``--apply``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, write_study
from runner.records.runfolder import RunFolder
from studies import CNN, VIT, study_toml

STUDY = "# a tiny study to tune (this comment must survive --apply)\n" + study_toml(
    defaults={"epochs": 8, "batch_size": 16, "lr": 3e-3},
    architectures={"vit": VIT | {"dim": 32, "depth": 2, "mlp_dim": 64}, "cnn": CNN}, tables=(), extra="""
[tune.vit_lr]   # the ViT's learning rate
match = { architecture = "vit" }
trials = 6
space = { lr = { low = 1e-6, high = 1e-2, log = true } }
sampler = { kind = "random", seed = 8 }
pruner = { kind = "median", startup_trials = 1 }
""")
# RandomSampler(seed=8) asks lr = 3e-3, 7e-3, 3e-3, 1e-4, 9e-6, 1e-6 (the ask order is fixed, whatever
# finishes first): a good first trial to compare with, then trials no pruner lets finish.


def optuna_study(d: Path, name: str = "tiny/vit_lr"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{d / 'results' / 'runner.db'}")


def folder_state(d: Path, run_id: str):
    from runner.records.runfolder import RunFolder

    return RunFolder(d / "results" / "runs" / run_id).read()


def plan_ids(d: Path) -> dict[str, str]:
    out = run_cli("plan", "--json", cwd=d)
    assert out.returncode == 0, out.stderr
    return {r["label"]: r["id"] for r in json.loads(out.stdout)["runs"]}


def test_six_trials_with_pruning_then_apply_changes_exactly_the_tuned_cells(tmp_path):
    import optuna

    S = optuna.trial.TrialState
    write_study(tmp_path, STUDY)
    out = run_cli("tune", "vit_lr", "--workers", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna_study(tmp_path)
    trials = study.get_trials()
    assert len(trials) == 6
    states = [t.state for t in trials]
    assert S.RUNNING not in states and S.FAIL not in states
    assert S.COMPLETE in states and S.PRUNED in states, states

    from runner.records.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'results' / 'runner.db'}", tmp_path / "results" / "runs", create=False)
    for t in trials:
        (run_id,) = t.user_attrs["runs"]
        fs = folder_state(tmp_path, run_id)
        assert fs.run["label"] == f"tune/vit_lr/t{t.number}" and fs.run["config"]["train"]["lr"] == t.params["lr"]
        record = store.runs([run_id])[run_id]
        assert record.label == fs.run["label"]
        _, epochs, values = store.series([run_id], "val_acc")
        if t.state == S.COMPLETE:
            assert fs.state == "done" and record.state == "done"
            assert t.value == pytest.approx(fs.summary["best_val_acc"])
            assert epochs == list(range(1, 9))  # every epoch's validation is in the store's metric series
        else:  # pruned: stopped early by its worker, its curve kept, never to be resumed
            assert fs.state == "pruned" and record.state == "pruned", (fs.state, fs.reason)
            assert len(epochs) < 8 and not (tmp_path / "results" / "runs" / run_id / "checkpoint.pt").exists()
        # what Optuna was told is the run's own validation curve, epoch by epoch
        assert t.intermediate_values and all(t.intermediate_values[e] == pytest.approx(v)
                                             for e, v in zip(epochs, values) if e in t.intermediate_values)
        prov = fs.attempts[-1]["provenance"]  # the same provenance as any run
        assert record.attempts >= 1 and prov["torch"] and prov["host"] and "tune" in prov["command"]

    status = run_cli("status", "--json", cwd=tmp_path)
    (tuning,) = json.loads(status.stdout)["tuning"]
    assert tuning["complete"] + tuning["pruned"] == 6 and tuning["failed"] == tuning["running"] == 0
    assert tuning["best"]["trial"] == study.best_trial.number and tuning["best"]["value"] == study.best_value

    again = run_cli("tune", "vit_lr", "--workers", "2", cwd=tmp_path)  # already at 6: nothing trains
    assert again.returncode == 0 and len(optuna_study(tmp_path).get_trials()) == 6, again.stdout + again.stderr

    # the report tables the best trial of the tuned cell, from the run's summary
    table = run_cli("report", "--table", "tune_vit_lr", "--format", "csv", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, row = [line.split(",") for line in table.stdout.strip().splitlines()]
    best = study.best_trial
    assert header == ["cell", "best_val_acc (%)", "trial", "lr", "run"]
    assert row == ["vit/digits", f"{best.value * 100:.1f}", str(best.number), f"{best.params['lr']:.4g}",
                   best.user_attrs["runs"][0]]

    before = plan_ids(tmp_path)
    applied = run_cli("tune", "vit_lr", "--apply", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    after = plan_ids(tmp_path)
    changed = {label for label in before if before[label] != after[label]}
    assert changed == {"vit/digits/s0", "vit/digits/s1"}, changed
    text = (tmp_path / "experiments.toml").read_text()
    assert "# a tiny study to tune (this comment must survive --apply)" in text and "# the ViT's learning rate" in text
    import tomllib

    (override,) = tomllib.loads(text)["override"]
    from runner.tune.apply import readable

    others = [t.params["lr"] for t in study.get_trials() if t.number != study.best_trial.number and "lr" in t.params]
    assert override["set"] == {"lr": readable(study.best_params["lr"], others)} and override["match"] == {"architecture": "vit"}
    assert override["tuned_by"] == {"study": "vit_lr", "trial": study.best_trial.number, "metric": "best_val_acc",
                                    "value": study.best_value}
    # applying again updates that override instead of adding a second one
    assert run_cli("tune", "vit_lr", "--apply", cwd=tmp_path).returncode == 0
    assert len(tomllib.loads((tmp_path / "experiments.toml").read_text())["override"]) == 1
    assert plan_ids(tmp_path) == after


def test_applied_values_are_readable_but_still_tell_the_trials_apart():
    from runner.tune.apply import readable

    assert readable(0.0012345678901, [0.002, 0.0005]) == 0.001235
    assert readable(0.0012345678901, [0.0012349]) == 0.0012346  # 4 digits would make them one value
    assert readable(64, [32]) == 64 and readable("cosine", []) == "cosine" and readable(True, []) is True


def test_an_applied_override_sits_between_blank_lines(tmp_path, monkeypatch):
    """Written next to a person's own override and before their table, as they would leave it."""
    from runner.study.spec import load_study
    from runner.tune.apply import write_override

    text = STUDY + """
[[override]]
match = { architecture = "cnn" }
set = { lr = 0.01 }

[[table]]
name = "acc"
rows = "architecture"
columns = "dataset"
metric = "test_acc"
"""
    write_study(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    study = load_study(Path("experiments.toml"))
    write_override(study, study.tunes["vit_lr"], 3, 0.9, {"lr": 0.0042})
    written = (tmp_path / "experiments.toml").read_text()
    assert "set = { lr = 0.01 }\n\n[[override]] # written by `runner tune vit_lr --apply`\n" in written
    assert "\nset = {lr = 0.0042}\n" in written.replace("{ lr", "{lr").replace("0042 }", "0042}")
    assert re.search(r"\ntuned_by = \{[^\n]*\}\n\n\[\[table\]\]", written), written


def start_tune(d: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", "tune", "vit_lr", "--workers", "2"], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_tuner_killed_with_kill_9_resumes_and_finishes_its_trials(tmp_path):
    import optuna

    S = optuna.trial.TrialState
    write_study(tmp_path, STUDY.replace('pruner = { kind = "median", startup_trials = 1 }', 'pruner = { kind = "none" }')
                .replace("trials = 6", "trials = 4"))
    runs = tmp_path / "results" / "runs"
    proc = start_tune(tmp_path)
    deadline = time.monotonic() + 300
    # kill it once one trial is done and another is mid-run with a checkpoint to resume from, and
    # far enough from its end (at most 5 of 8 epochs) that it cannot finish before its worker sees
    # the tuner die (one that does keeps its "done": test_resume.py)
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the tuner ended before it could be killed"
        folders = [p for p in runs.glob("*") if p.is_dir() and not p.name.startswith(".")] if runs.exists() else []
        done = [p for p in folders if (p / "summary.json").exists()]
        midway = [p for p in folders if (p / "checkpoint.pt").exists() and not (p / "summary.json").exists()
                  and 1 <= len(RunFolder(p).metrics()) <= 5]
        if done and midway:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = midway[0].name
    # a tuner killed between asking a trial and writing its runs leaves a trial with no runs
    orphan = optuna_study(tmp_path).ask()

    out = run_cli("tune", "vit_lr", "--workers", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    trials = optuna_study(tmp_path).get_trials()
    assert sum(t.state == S.COMPLETE for t in trials) == 4
    assert not [t for t in trials if t.state == S.RUNNING]  # nothing is left running forever
    lost = next(t for t in trials if t.number == orphan.number)
    assert lost.state == S.FAIL and "before this trial's run folders were written" in lost.user_attrs["reason"]
    # the interrupted trial was continued, its run resumed from its checkpoint, not started over
    (mine,) = [t for t in trials if t.user_attrs.get("runs") == [interrupted]]
    assert mine.state == S.COMPLETE
    fs = folder_state(tmp_path, interrupted)
    assert [a["status"] for a in fs.attempts] == ["interrupted", "done"], fs.attempts
    assert fs.attempts[-1]["engine"]["resumed_from"]["epoch"] >= 1
    # every complete trial's runs trained to the end exactly once. A trial the kill caught
    # between naming its runs and writing their folders failed (as the orphan above) and
    # trained nothing.
    for t in trials:
        for run_id in t.user_attrs.get("runs", []):
            statuses = [a["status"] for a in folder_state(tmp_path, run_id).attempts]
            if t.state == S.COMPLETE:
                assert statuses.count("done") == 1, (t.number, run_id, statuses)
            else:
                assert t.state == S.FAIL and "before this trial's run folders were written" in t.user_attrs["reason"]
                assert statuses == [], (t.number, run_id, statuses)


# ---------------------------------------------------------------- user mistakes: one line, exit 2


@pytest.mark.parametrize("block, message", [
    ('metric = "test_acc"', "tuning on the test split"),
    ('space = { lr = { low = 1e-2, high = 1e-4 } }', "low must be below high"),
    ('space = { lr = { low = 0.0, high = 1e-2, log = true } }', "log = true: low must be > 0"),
    ('space = { depht = { choices = [1, 2] } }', "depht: unknown key"),
    ('space = { lr = { choices = [] } }', "expected a non-empty list"),
    ('space = { lr = { low = 1e-4, high = 1e-2, lg = true } }', "lg: unknown key"),
    ('pruner = { kind = "sha" }', "pruner.kind"),
])
def test_bad_tune_blocks_are_refused_with_one_line(tmp_path, block, message):
    key = block.split(" = ")[0]
    lines = [line for line in STUDY.splitlines() if not line.startswith(f"{key} = ")]
    text = "\n".join(lines).replace("[tune.vit_lr]   # the ViT's learning rate", f"[tune.vit_lr]\n{block}")
    write_study(tmp_path, text)
    out = run_cli("plan", cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr and "[tune.vit_lr]" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_tune_refuses_before_training_what_cannot_run(tmp_path):
    write_study(tmp_path, STUDY.replace('space = { lr = { low = 1e-6, high = 1e-2, log = true } }',
                                        'space = { "architecture.heads" = { choices = [2, 3] } }'))
    out = run_cli("tune", "vit_lr", cwd=tmp_path)
    assert out.returncode == 2 and "3 heads do not divide dim 32" in out.stderr, out.stderr
    runs = tmp_path / "results" / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]  # nothing trained

    write_study(tmp_path, STUDY.replace('match = { architecture = "vit" }', 'match = { architecture = "vgg" }'))
    out = run_cli("tune", "vit_lr", cwd=tmp_path)
    assert out.returncode == 2 and '[tune.vit_lr] match matches no cell: architecture = "vgg"; architectures are vit' in out.stderr, out.stderr
    write_study(tmp_path, STUDY)
    for args, message in ((["tune", "vit_lrr"], "no such block; defined: vit_lr"),
                          (["tune", "vit_lr", "--apply"], "has no trials yet")):
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_changed_block_does_not_mix_with_the_trials_of_the_old_one(tmp_path):
    from runner.commands import load
    from runner.errors import SpecError
    from runner.tune.tuner import open_study, tuned_cells

    write_study(tmp_path, STUDY)
    sel = load(tmp_path / "experiments.toml")
    block = sel.study.tunes["vit_lr"]
    open_study(sel.study, block, tuned_cells(sel.study, sel.plan, block), create=True).ask()
    write_study(tmp_path, STUDY.replace("high = 1e-2", "high = 3e-2"))
    sel = load(tmp_path / "experiments.toml")
    block = sel.study.tunes["vit_lr"]
    with pytest.raises(SpecError, match="rename the block to start a new study, or delete this one: optuna delete-study"):
        open_study(sel.study, block, tuned_cells(sel.study, sel.plan, block), create=True)
    # more trials are not a change: the trial count is not part of what makes trials comparable
    write_study(tmp_path, STUDY.replace("trials = 6", "trials = 9"))
    sel = load(tmp_path / "experiments.toml")
    assert open_study(sel.study, sel.study.tunes["vit_lr"], tuned_cells(sel.study, sel.plan, block), create=True)


def test_status_lists_a_block_never_tuned(tmp_path):
    write_study(tmp_path, STUDY)
    out = run_cli("status", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)["tuning"]  # the block is listed, with no trial yet
    assert entry["name"] == "vit_lr" and entry["trials"] == 6 and entry["best"] is None
    assert entry["complete"] == entry["pruned"] == entry["failed"] == entry["running"] == 0
