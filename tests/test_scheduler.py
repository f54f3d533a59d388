"""Launch survives what users do to it: kill -9 mid-matrix, Ctrl-C, a second launcher at once.

Real launcher and worker processes on the tiny digits study; runs last a few seconds each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, write_study


def start_launch(d: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", "launch", "--workers", "1"], cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def events(run_dir: Path) -> list[dict]:
    p = run_dir / "attempts.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []


def wait_for_one_done_one_running(d: Path, timeout: float = 180) -> tuple[dict[Path, bytes], Path]:
    """Block until a run has finished and another is mid-training; return their evidence."""
    runs = d / "results" / "runs"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {p: p.read_bytes() for p in runs.glob("*/summary.json")} if runs.exists() else {}
        busy = [p for p in runs.glob("*") if (p / "metrics.jsonl").exists() and not (p / "summary.json").exists()]
        if done and busy:
            return done, busy[0]
        time.sleep(0.05)
    raise AssertionError("the launch never reached a finished run plus a running one")


def finished_once(d: Path) -> None:
    """Every run is done exactly once: one 'done' end event, never two."""
    for run_dir in (d / "results" / "runs").glob("[!.]*"):
        ends = [e for e in events(run_dir) if e["event"] == "end" and e["status"] == "done"]
        assert len(ends) == 1, (run_dir, events(run_dir))


@pytest.mark.parametrize("what", ["launcher", "launcher_and_workers"])
def test_kill_9_then_relaunch_runs_only_the_unfinished(tmp_path, what):
    write_study(tmp_path, epochs=15)  # the kill follows the first metric line of the second run at once
    proc = start_launch(tmp_path)
    done_before, busy = wait_for_one_done_one_running(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in done_before}
    worker_pid = next(e["pid"] for e in events(busy) if e["event"] == "start")
    os.kill(proc.pid, signal.SIGKILL)
    if what == "launcher_and_workers":
        os.kill(worker_pid, signal.SIGKILL)
    proc.wait()

    view = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    states = {r["id"]: r["state"] for r in view["runs"]}
    assert states[busy.name] in ("cancelled", "lost")  # never "running" behind a dead launcher
    assert all(states[p.parent.name] == "done" for p in done_before)

    again = run_cli("launch", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"({len(done_before)} were already done)" in again.stdout
    assert json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)["counts"] == {"done": 4}
    for p, content in done_before.items():  # finished results intact, not redone
        assert p.read_bytes() == content and p.stat().st_mtime_ns == mtimes[p]
    finished_once(tmp_path)
    starts = [e for e in events(busy) if e["event"] == "start"]
    assert len(starts) == 2


def test_ctrl_c_stops_cleanly_and_a_second_launcher_is_refused(tmp_path):
    write_study(tmp_path, epochs=60)
    proc = start_launch(tmp_path)
    done_before, busy = wait_for_one_done_one_running(tmp_path)

    second = run_cli("launch", "--workers", "1", cwd=tmp_path)
    assert second.returncode == 2
    assert f"another launcher is running this study (pid {proc.pid}" in second.stderr
    assert json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)["counts"].get("queued", 0) >= 1

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    # named the same way by plan (which reads without ingesting), status and show
    planned = json.loads(run_cli("plan", "--json", cwd=tmp_path).stdout)
    assert {r["id"]: r["state"] for r in planned["runs"]}[busy.name] == "cancelled"
    view = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    states = {r["id"]: r["state"] for r in view["runs"]}
    assert states[busy.name] == "cancelled"
    assert json.loads(run_cli("show", busy.name, "--json", cwd=tmp_path).stdout)["state"] == "cancelled"
    assert all(states[p.parent.name] == "done" for p in done_before)

    again = run_cli("launch", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)["counts"] == {"done": 4}
    finished_once(tmp_path)
