"""One run over two processes (``gpus_per_run = 2``): DistributedDataParallel with gloo on CPU.

No GPU here, so the two ranks are CPU processes; NCCL, the GPU backend, cannot run. Everything
else is real: ``runner launch --workers 2`` reserves both slots for the run, its worker starts
the second rank as a process of its own, they rendezvous on localhost and average gradients.
The test checks what a user relies on: the same global batch on two processes trains the
weights one process trains (to float rounding: SGD, no dropout), and a run whose worker, or
whose second rank, is killed with -9 mid-training resumes from its checkpoint to the weights of
an uninterrupted run, a SLURM task's batch worker records such a run lost (of three ranks) and
goes on with its next, and a slot lent to a distributed run takes no other run while that run's rank trains there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import write_study
from runner.records.runfolder import read_json, read_jsonl
from studies import VIT, study_toml


def ddp_study(epochs: int, ranks: int) -> str:
    """One ViT on digits, trained with plain SGD (no dropout) over ``ranks`` processes."""
    return study_toml("ddp", seeds=[0], defaults={"epochs": epochs, "batch_size": 64, "optimizer": "sgd", "lr": 0.05,
                                                   "gpus_per_run": ranks},
                      architectures={"vit": VIT | {"dim": 32, "depth": 2, "mlp_dim": 64}}, tables=())


SMALL = """
[architectures.small]
model = "vit"
patch_size = 4
dim = 16
depth = 1
heads = 2
mlp_dim = 32
"""
SMALL_ONE_PROCESS = SMALL + """
[[override]]
match = { architecture = "small" }
set = { gpus_per_run = 1, epochs = 2 }
"""


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of ``pid``'s child processes, read from /proc (no psutil here)."""
    out = []
    for stat in os.listdir("/proc"):
        if not stat.isdigit():
            continue
        try:
            ppid = int(open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()[1])
            cmdline = open(f"/proc/{stat}/cmdline").read().replace("\0", " ")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append((int(stat), cmdline))
    return out


def _launch(root, ranks: int, epochs: int, *, kill_after: int | None = None, kill_rank: int = 0):
    """Train the study's one run with ``ranks`` processes; returns (its folder, the CLI's result).
    ``kill_after``: kill -9 rank ``kill_rank`` (0: the worker that took the run) after that many epochs."""
    write_study(root, ddp_study(epochs, ranks))
    proc = subprocess.Popen([sys.executable, "-m", "runner", "launch", "--workers", str(max(ranks, 1))], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = root / "results" / "runs"
    if kill_after is not None:  # kill -9 a rank once rank 0 checkpointed `kill_after` epochs
        end = time.monotonic() + 300
        while True:
            folders = [p for p in runs.glob("*") if p.is_dir() and not p.name.startswith(".")] if runs.exists() else []
            if folders and len(read_jsonl(folders[0] / "metrics.jsonl")) >= kill_after:
                break
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.01)
        victim = read_json(folders[0] / "heartbeat.json")["pid"]
        if kill_rank:
            (victim,) = [pid for pid, cmd in _children(victim) if f"--rank {kill_rank} " in cmd]
        os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    (folder,) = [p for p in runs.glob("*") if p.is_dir() and not p.name.startswith(".")]
    return folder, out + err


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _launch(tmp_path_factory.mktemp("single"), 1, 4)[0]


@pytest.fixture(scope="module")
def double(tmp_path_factory):
    return _launch(tmp_path_factory.mktemp("double"), 2, 4)[0]


def test_two_gloo_processes_train_the_weights_of_one_with_the_same_global_batch(single, double):
    assert single.name == double.name  # gpus_per_run says how the run is trained, not what: the same run id
    one, two = _weights(single), _weights(double)
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    a, b = (read_json(f / "summary.json") for f in (single, double))
    # the last epoch's mean loss, summed over both ranks' shares, is the single process's (float rounding
    # of 80 steps apart); so is the accuracy on the test split, which the ranks evaluate half each
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-3 * a["train_loss"] and a["test_acc"] == b["test_acc"]
    assert a["steps"] == b["steps"]
    engine = next(e["engine"] for e in read_jsonl(double / "attempts.jsonl") if e["event"] == "engine")
    assert (engine["world_size"], engine["ddp_backend"], engine["global_batch"], engine["batch_per_process"]) == \
        (2, "gloo", 64, 32)
    assert (double / "rank-1.log").exists()  # the second rank ran as a process of its own


@pytest.mark.parametrize("kill_rank", [0, 1], ids=["rank-0-worker", "rank-1"])
def test_a_distributed_run_killed_mid_training_resumes_from_its_checkpoint(double, tmp_path, kill_rank):
    # rank 0 killed: the launcher sees its worker die. Rank 1 killed: rank 0 fails in a collective
    # with no reason from rank 1, so the run was lost, not broken, and is retried all the same
    folder, out = _launch(tmp_path, 2, 4, kill_after=2, kill_rank=kill_rank)
    assert "retrying" in out and "1 done" in out, out
    if kill_rank:
        assert "another rank of this distributed run was killed" in out, out
    attempts = [e for e in read_jsonl(folder / "attempts.jsonl")]
    assert [e["status"] for e in attempts if e["event"] == "end"] == ["lost", "done"]
    resumed = [e["engine"]["resumed_from"] for e in attempts if e["event"] == "engine"]
    assert resumed[0] is None and resumed[1]["epoch"] >= 1
    mine, straight = _weights(folder), _weights(double)
    assert max((mine[k] - straight[k]).abs().max().item() for k in mine) < 1e-6
    assert json.loads((folder / "summary.json").read_text())["epochs"] == 4


def test_a_lent_slot_whose_worker_dies_takes_no_run_until_the_distributed_run_ends(tmp_path):
    # vit trains on both slots; the other slot's own worker only waits for it. Kill that worker:
    # the slot's second rank still trains there, so the queued run must wait for the slot
    study = ddp_study(3, 1).replace(
        'architectures = ["vit"]', 'architectures = ["vit", "small"]') + SMALL + """
[[override]]
match = { architecture = "vit" }
set = { gpus_per_run = 2, epochs = 40 }  # about 15 s: time for a fresh worker to start
"""
    write_study(tmp_path, study)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "launch", "--workers", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "results" / "runs"
    end = time.monotonic() + 300
    while True:
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        trained = [p for p in runs.glob("[!.]*") if read_jsonl(p / "metrics.jsonl")] if runs.exists() else []
        if trained:
            break
        time.sleep(0.05)
    (wide,) = trained
    rank0 = read_json(wide / "heartbeat.json")["pid"]
    (lent,) = [pid for pid, cmd in _children(proc.pid) if "runner.train.worker" in cmd and pid != rank0]
    os.kill(lent, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "2 done" in out, out + err
    (small,) = [p for p in runs.glob("[!.]*") if p != wide]
    wide_end = max(e["time"] for e in read_jsonl(wide / "attempts.jsonl") if e["event"] == "end")
    small_start = min(e["time"] for e in read_jsonl(small / "attempts.jsonl") if e["event"] == "start")
    assert small_start > wide_end
    assert [e["status"] for e in read_jsonl(wide / "attempts.jsonl") if e["event"] == "end"] == ["done"]


def test_a_batch_worker_records_a_run_lost_when_a_rank_is_killed_and_goes_on(tmp_path):
    # a SLURM task's worker runs its runs in turn (batch mode). Three ranks: rank 1 killed breaks
    # rank 2's collective too, which writes an error file; the run is still lost (the next launch
    # takes it again from its checkpoint), not failed with rank 2's echo, and the next run trains
    from runner.commands import load
    from runner.records.runfolder import RunFolder
    from runner.launch.scheduler import run_json

    write_study(tmp_path, ddp_study(40, 3).replace("batch_size = 64", "batch_size = 48")
                .replace('architectures = ["vit"]', 'architectures = ["vit", "small"]') + SMALL_ONE_PROCESS)
    sel = load(tmp_path / "experiments.toml")
    folders = {run.architecture: RunFolder(sel.study.runs_dir / run.id) for run in sel.runs}
    for run in sel.runs:
        folders[run.architecture].create(run_json(run, sel.study))
    proc = subprocess.Popen([sys.executable, "-m", "runner.train.worker", "--study-dir", str(tmp_path), "--device", "cpu",
                             "--runs", str(folders["vit"].path), str(folders["small"].path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 300
    while len(read_jsonl(folders["vit"].file("metrics.jsonl"))) < 2:
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.01)
    (rank1,) = [pid for pid, cmd in _children(proc.pid) if "--rank 1 " in cmd]
    os.kill(rank1, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    (end_event,) = [e for e in read_jsonl(folders["vit"].file("attempts.jsonl")) if e["event"] == "end"]
    assert end_event["status"] == "lost" and "rank 1 was killed by SIGKILL" in end_event["reason"], end_event
    assert folders["vit"].file("checkpoint.pt").exists()
    assert folders["small"].read().state == "done"


def _helpers(*codes: str) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", code]) for code in codes]


def test_the_reason_a_distributed_run_ended_names_the_rank_that_caused_it(tmp_path):
    from runner.train.distributed import Ranks, error_file, failure_of, killed_rank

    sleep, fail = "import time; time.sleep(60)", "raise SystemExit(1)"
    # rank 2 failed first (its error file is older); rank 1 echoed it, then was killed by kill -9
    ranks = Ranks(0, 3, "gloo", _helpers(sleep, fail), run_dir=tmp_path)
    ranks.helpers[1].wait()
    assert killed_rank(ranks) is None  # rank 1 alive, rank 2 exited with an error code: nobody killed
    assert failure_of(ranks) == "rank 2 exited with code 1 without saying why (its log: rank-2.log)"
    for rank, reason, mtime in ((2, "out of memory", 50.0), (1, "Connection closed by peer", 100.0)):
        path = error_file(tmp_path, rank)
        path.write_text(json.dumps({"reason": reason}))
        os.utime(path, (mtime, mtime))
    assert failure_of(ranks) == "rank 2: out of memory"  # written first: the cause, not its echo
    ranks.helpers[0].kill()
    ranks.helpers[0].wait()
    assert killed_rank(ranks) == "rank 1 was killed by SIGKILL (its log: rank-1.log)"
    # a rank that crashed by itself fails the run: it is not retried as lost
    crashed = Ranks(0, 2, "gloo", _helpers("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"),
                    run_dir=tmp_path / "other")
    crashed.helpers[0].wait()
    assert killed_rank(crashed) is None
    assert failure_of(crashed) == "rank 1 crashed with SIGSEGV (its log: rank-1.log)"
