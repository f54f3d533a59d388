"""A launch survives its workers: killed or hung workers are retried from their checkpoint,
`runner cancel` stops runs cleanly, and a reused worker gives the same numbers as a fresh one.

Real launcher and worker processes on the tiny digits study (see ``test_scheduler.py`` for the
launcher itself being killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_cli, write_study

TIMING_KEYS = {"train_time_s", "train_images_per_s", "infer_images_per_s", "infer_latency_ms", "peak_mem_mb",
               "epoch_time_s"}


def start_launch(d: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", "launch", *args], cwd=d, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def events(run_dir: Path) -> list[dict]:
    p = run_dir / "attempts.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def wait_for(predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def checkpointed_run(d: Path) -> Path | None:
    """A run that is training and has written a checkpoint."""
    runs = d / "results" / "runs"
    return next((p.parent for p in runs.glob("*/checkpoint.pt") if not (p.parent / "summary.json").exists()), None)


def worker_pid(run_dir: Path) -> int:
    return [e for e in events(run_dir) if e["event"] == "start"][-1]["pid"]


def attempts(d: Path, run_id: str) -> list[dict]:
    return json.loads(run_cli("show", run_id, "--json", cwd=d).stdout)["attempts"]


def test_a_killed_worker_is_lost_then_retried_from_its_checkpoint(tmp_path):
    write_study(tmp_path, epochs=20)  # the kill lands right after the first checkpoint: 19 epochs to spare
    proc = start_launch(tmp_path, "--workers", "1", "--where", "architecture=cnn", "--where", "seed=0")
    run_dir = wait_for(lambda: checkpointed_run(tmp_path), "a checkpoint")
    os.kill(worker_pid(run_dir), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "retrying (1/2), from its last checkpoint" in out + err
    assert "1 done, 0 failed, 0 lost" in out
    first, second = attempts(tmp_path, run_dir.name)
    assert first["status"] == "lost" and "killed by signal 9" in first["reason"]
    assert second["status"] == "done" and second["pid"] != first["pid"]
    assert second["provenance"]["engine"]["resumed_from"]["epoch"] >= 1


def test_with_no_retries_a_killed_worker_leaves_its_run_lost_until_the_next_launch(tmp_path):
    write_study(tmp_path, epochs=20)
    selection = ("--where", "architecture=cnn", "--where", "seed=0")
    proc = start_launch(tmp_path, "--workers", "1", "--retries", "0", *selection)
    run_dir = wait_for(lambda: checkpointed_run(tmp_path), "a checkpoint")
    os.kill(worker_pid(run_dir), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "0 done, 0 failed, 1 lost" in out and "killed by signal 9" in err
    view = json.loads(run_cli("status", "--json", *selection, cwd=tmp_path).stdout)
    assert [r["state"] for r in view["runs"]] == ["lost"] and "killed by signal 9" in view["runs"][0]["reason"]
    again = run_cli("launch", "--workers", "1", *selection, cwd=tmp_path)
    assert again.returncode == 0 and "1 done" in again.stdout
    assert [a["status"] for a in attempts(tmp_path, run_dir.name)] == ["lost", "done"]


def test_a_hung_worker_is_killed_after_its_heartbeat_goes_stale(tmp_path):
    write_study(tmp_path, epochs=20)
    proc = start_launch(tmp_path, "--workers", "1", "--where", "architecture=cnn", "--where", "seed=0",
                        env={"RUNNER_LOST_AFTER_S": "3"})
    run_dir = wait_for(lambda: checkpointed_run(tmp_path), "a checkpoint")
    pid = worker_pid(run_dir)
    os.kill(pid, signal.SIGSTOP)  # alive but silent, like a worker stuck in a driver call
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert f"killing worker pid {pid}" in out + err
    first, second = attempts(tmp_path, run_dir.name)
    assert first["status"] == "lost" and "no heartbeat for" in first["reason"]
    assert second["status"] == "done"


def test_cancel_stops_running_and_queued_runs_and_the_next_launch_finishes_them(tmp_path):
    write_study(tmp_path, epochs=40)  # ~15 s a run here: the cancel lands mid-run with ten times the time it takes
    proc = start_launch(tmp_path, "--workers", "1")
    run_dir = wait_for(lambda: checkpointed_run(tmp_path), "a checkpoint")
    arch = json.loads((run_dir / "run.json").read_text())["architecture"]
    cancel = run_cli("cancel", "--where", f"architecture={arch}", cwd=tmp_path)
    assert cancel.returncode == 0, cancel.stderr
    # one worker: the other seed of the running architecture is still waiting
    assert "cancelled 1 queued run(s); 1 running run(s) stop at their next step" in cancel.stdout
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "2 done, 0 failed, 0 lost, 2 cancelled" in out
    view = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    cancelled = {r["id"]: r for r in view["runs"] if r["state"] == "cancelled"}
    assert view["counts"] == {"done": 2, "cancelled": 2}
    assert cancelled[run_dir.name]["attempts"] == 1 and (run_dir / "checkpoint.pt").exists()
    (queued,) = [r for r in cancelled.values() if r["id"] != run_dir.name]
    assert queued["attempts"] == 0 and queued["reason"] == "cancelled before it started"
    assert run_cli("cancel", cwd=tmp_path).stdout.startswith("nothing to cancel")

    again = run_cli("launch", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 0 and "2 done" in again.stdout, again.stdout + again.stderr
    first, second = attempts(tmp_path, run_dir.name)
    assert first["status"] == "cancelled" and second["provenance"]["engine"]["resumed_from"]["epoch"] >= 1


def test_a_reused_worker_and_a_fresh_process_give_identical_results(tmp_path):
    """The long-lived worker leaks nothing from one run into the next (RNG, threads, caches)."""
    summaries = {}
    for mode, args in (("reused", ["--workers", "1"]), ("isolated", ["--workers", "1", "--isolate"])):
        d = tmp_path / mode
        write_study(d, epochs=3)
        launch = run_cli("launch", *args, cwd=d)
        assert launch.returncode == 0, launch.stdout + launch.stderr
        view = json.loads(run_cli("status", "--json", cwd=d).stdout)
        pids = {attempts(d, r["id"])[0]["pid"] for r in view["runs"]}
        assert len(pids) == (1 if mode == "reused" else 4)
        summaries[mode] = {r["id"]: {k: v for k, v in r["summary"].items() if k not in TIMING_KEYS}
                           for r in view["runs"]}
    assert summaries["reused"] == summaries["isolated"]
