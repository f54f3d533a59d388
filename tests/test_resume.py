"""Resume across processes, with real worker processes and real signals.

A worker killed with -9 after two of four epochs, or stopped by SIGTERM / SIGUSR1 (the
signal SLURM sends ahead of a time limit), resumes from the run's checkpoint and ends with
the same weights and numbers as a run never interrupted. An out-of-memory run fails with
that reason and the same worker goes on to the next run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_study
from runner.records.runfolder import RunFolder, read_jsonl
from studies import VIT, study_toml

STUDY = study_toml(
    "resume", seeds=[0], defaults={"epochs": 4, "batch_size": 16, "lr": 3e-3, "crop": "pad", "crop_padding": 1, "hflip": 0.5,
                                   "mixup": 0.2},
    architectures={"vit": VIT | {"patch_size": 2, "dim": 32, "depth": 2, "mlp_dim": 64, "dropout": 0.1},
                   "huge": VIT | {"mlp_dim": 2**45}},  # cannot be allocated anywhere: 2**45 hidden units
    tables=())

COMPARED = ("test_acc", "test_loss", "test_acc_last", "test_loss_last", "val_acc", "val_loss", "best_val_acc",
            "train_loss", "train_acc", "steps", "epochs", "best_epoch")


def _folders(root: Path) -> dict[str, RunFolder]:
    """One run folder per architecture, created by the launcher's own code."""
    from runner.commands import load
    from runner.launch.scheduler import run_json

    write_study(root, STUDY)
    sel = load(root / "experiments.toml")
    out = {}
    for run in sel.runs:
        folder = RunFolder(sel.study.runs_dir / run.id)
        folder.create(run_json(run, sel.study))
        out[run.architecture] = folder
    return out


def _copy(folder: RunFolder, to: Path) -> RunFolder:
    """The same run in another folder (run.json only), to train it a second time."""
    to.mkdir(parents=True)
    shutil.copy(folder.file("run.json"), to / "run.json")
    return RunFolder(to)


def _worker(study_dir: Path, *folders: RunFolder) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner.train.worker", "--study-dir", str(study_dir), "--device", "cpu",
                             "--threads", "1", "--runs", *(str(f.path) for f in folders)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(folder: RunFolder, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while len(read_jsonl(folder.file("metrics.jsonl"))) < n:
        assert proc.poll() is None, f"worker exited early: {proc.communicate()}"
        assert time.monotonic() < end, "timed out waiting for epochs"
        time.sleep(0.005)


def _finish(study_dir: Path, folder: RunFolder) -> None:
    proc = _worker(study_dir, folder)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


def _assert_same_run(a: RunFolder, b: RunFolder) -> None:
    wa, wb = (torch.load(f.file("model.pt"), weights_only=True) for f in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "final weights differ"
    sa, sb = a.read().summary, b.read().summary
    for key in COMPARED:
        assert sa[key] == sb[key], key
    ma, mb = a.metrics(), b.metrics()
    assert [m["epoch"] for m in mb] == [1, 2, 3, 4]
    for x, y in zip(ma, mb):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "step"):
            assert x[key] == y[key], (x["epoch"], key)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The run trained once, never interrupted; returns (study dir, its folder)."""
    root = tmp_path_factory.mktemp("straight")
    folder = _folders(root)["vit"]
    _finish(root, folder)
    return root, folder


def test_kill_9_after_two_epochs_then_resume_gives_the_same_run(straight, tmp_path):
    root, reference = straight
    folder = _copy(reference, tmp_path / "killed")
    proc = _worker(root, folder)
    _wait_for_epochs(folder, 2, proc)
    proc.kill()  # SIGKILL: no handler runs, no checkpoint is written on the way out
    proc.wait()
    assert folder.read().state == "lost"
    _finish(root, folder)

    attempts = folder.read().attempts
    assert len(attempts) == 2 and [a.get("status") for a in attempts] == [None, "done"]
    assert attempts[1]["engine"]["resumed_from"]["epoch"] >= 1  # it resumed, it did not start over
    assert not folder.file("checkpoint.pt").exists()  # dropped once the summary is written
    _assert_same_run(reference, folder)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_checkpoints_mid_run_and_the_run_resumes_to_the_same_result(straight, tmp_path, sig):
    root, reference = straight
    folder = _copy(reference, tmp_path / "signalled")
    proc = _worker(root, folder)
    _wait_for_epochs(folder, 1, proc)
    time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    state = folder.read()
    assert state.state == "cancelled" and state.attempts[-1]["status"] == "interrupted"
    assert folder.file("checkpoint.pt").exists()

    _finish(root, folder)
    resumed = folder.read().attempts[-1]["engine"]["resumed_from"]
    assert resumed is not None and resumed["step"] > 0
    _assert_same_run(reference, folder)


def test_out_of_memory_fails_the_run_and_the_worker_takes_the_next(tmp_path):
    folders = _folders(tmp_path)
    huge, normal = folders["huge"], folders["vit"]
    proc = _worker(tmp_path, huge, normal)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1  # one run failed
    failed, done = huge.read(), normal.read()
    assert failed.state == "failed" and failed.reason.startswith("out of memory ("), failed.reason
    assert "can't allocate memory" in failed.error["traceback"]
    assert done.state == "done"
    assert failed.attempts[-1]["pid"] == done.attempts[-1]["pid"] == proc.pid  # the same worker went on
    assert os.path.getsize(normal.file("model.pt")) > 0


# The launcher's death seen between a run's summary.json and its attempt's end line: the worker's
# stdin reader (runner.train.worker.launcher_gone) must not write "interrupted" after the run's
# "done" (a tuner killed with -9 just as a trial finished once left a done run whose only attempt
# said interrupted). This script trains the run with the worker's own run_one in a process of its
# own (launcher_gone may end it) and lets the launcher die at that moment.
_DIES_AS_IT_ENDS = """
import sys, threading
import torch
from runner.records.runfolder import RunFolder
from runner.train import worker

gone = []
end_attempt = RunFolder.end_attempt

def end_attempt_as_the_launcher_dies(self, attempt, status, reason=None):
    if status == "done" and not gone:
        gone.append(threading.Thread(target=worker.launcher_gone))
        gone[0].start()
        gone[0].join(0.5)  # it would exit the process here if it did not wait for the run's end
    end_attempt(self, attempt, status, reason)

RunFolder.end_attempt = end_attempt_as_the_launcher_dies
state, reason = worker.run_one(RunFolder(sys.argv[1]), "cpu", {})
gone[0].join()
print(state)
"""


def test_a_run_that_finishes_as_its_launcher_dies_stays_done(tmp_path):
    folder = _folders(tmp_path)["vit"]
    out = subprocess.run([sys.executable, "-c", _DIES_AS_IT_ENDS, str(folder.path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "done", (out.returncode, out.stdout, out.stderr)
    state = folder.read()
    assert state.state == "done" and [a["status"] for a in state.attempts] == ["done"], state.attempts
