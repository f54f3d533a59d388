"""Faults produced for real, each ending with nothing finished lost, nothing finished retrained,
and a message that names the fault: a worker killed while it starts, a worker that cannot start,
garbage in a done mark, a metrics line cut by a kill and a deleted checkpoint, read-only results,
a full disk, and a relaunch while the workers of a killed launcher still live.

The read-only folder and the full disk are real filesystems (a tmpfs mounted read-only, a small
tmpfs filled up): they need root, and are skipped with that reason otherwise."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, write_study
from test_scheduler import events, finished_once, wait_for_one_done_one_running


def status(d: Path) -> dict:
    out = run_cli("status", "--json", cwd=d)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def states(d: Path) -> dict[str, str]:
    return {r["id"]: r["state"] for r in status(d)["runs"]}


def evidence(d: Path) -> dict[Path, tuple[bytes, int]]:
    """Every finished run's summary and weights, with their modification times."""
    files = [p for pattern in ("*/summary.json", "*/model.pt") for p in (d / "results" / "runs").glob(pattern)]
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def intact(before: dict[Path, tuple[bytes, int]]) -> None:
    for p, (content, mtime) in before.items():
        assert p.read_bytes() == content and p.stat().st_mtime_ns == mtime, f"{p} was rewritten"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny study (4 runs) trained once; each test works on a copy."""
    d = tmp_path_factory.mktemp("trained")
    write_study(d, epochs=1)
    out = run_cli("launch", "--workers", "2", cwd=d)
    assert out.returncode == 0, out.stdout + out.stderr
    return d


def copy_of(trained: Path, where: Path) -> Path:
    shutil.copytree(trained, where, symlinks=True)
    return where


def worker_pids(d: Path) -> list[int]:
    """Live worker processes of the study in ``d`` (their command line names its folder)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"runner.train.worker" in cmd and str(d).encode() in cmd:
            pids.append(int(proc.name))
    return pids


def wait_until(predicate, timeout: float = 120, what: str = "it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- workers that do not start


def test_a_worker_killed_while_it_starts_is_replaced_and_the_launch_goes_on(tmp_path):
    write_study(tmp_path, epochs=1)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "launch", "--workers", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = wait_until(lambda: worker_pids(tmp_path), what="the first worker")[0]
    os.kill(first, signal.SIGKILL)  # it is importing torch: seconds before it could say ready
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "the worker on cpu0 was killed (signal 9) while starting; starting another (1/2)" in err
    assert status(tmp_path)["counts"] == {"done": 4}
    finished_once(tmp_path)


def test_a_worker_that_cannot_start_stops_the_launch_with_the_end_of_its_log(tmp_path):
    write_study(tmp_path, epochs=1)
    broken = tmp_path / "broken"  # a torch that fails to import: the same failure every time
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text('raise ImportError("this torch is broken")\n')
    env = {"PYTHONPATH": os.pathsep.join([str(broken), os.environ.get("PYTHONPATH", "")])}
    out = run_cli("launch", "--workers", "1", cwd=tmp_path, env=env)
    assert out.returncode == 1, out.stdout + out.stderr  # not bad input: 2 is for that
    assert "a worker could not start (exit code 1); the end of its log" in out.stderr
    assert "ImportError: this torch is broken" in out.stderr and "Traceback" not in out.stderr.split("\n")[0]
    assert not list((tmp_path / "results" / "runs").glob("*/summary.json"))


# ---------------------------------------------------------------- damaged folders


def test_garbage_in_a_done_mark_is_corrupt_never_retrained_without_asking(trained, tmp_path):
    d = copy_of(trained, tmp_path / "s")
    run_dir = next((d / "results" / "runs").glob("*/summary.json")).parent
    (run_dir / "summary.json").write_text('{"test_acc": 0.9')  # a sync tool, a disk, a hand edit
    before = evidence(d)

    view = status(d)
    entry = next(r for r in view["runs"] if r["id"] == run_dir.name)
    assert entry["state"] == "corrupt" and entry["reason"].startswith("cannot be parsed: summary.json: ")
    assert view["counts"] == {"done": 3, "corrupt": 1}

    again = run_cli("launch", "--workers", "1", cwd=d)
    assert again.returncode == 0, again.stderr
    assert "1 corrupt (a results file cannot be parsed" in again.stdout and "--rerun corrupt" in again.stdout
    intact(before)  # its weights and its damaged summary are left as they are

    rebuilt = run_cli("sync", "--rebuild", cwd=d)
    assert rebuilt.returncode == 0, rebuilt.stderr
    label = json.loads((run_dir / "run.json").read_text())["label"]
    assert f"corrupt {label} {run_dir.name}: cannot be parsed: summary.json" in rebuilt.stderr

    fixed = run_cli("launch", "--workers", "1", "--rerun", "corrupt", cwd=d)
    assert fixed.returncode == 0, fixed.stderr
    assert status(d)["counts"] == {"done": 4}
    assert json.loads((run_dir / "summary.json").read_text())["test_acc"] > 0
    assert [p.read_text() for p in run_dir.glob("summary.json.corrupt-*")] == ['{"test_acc": 0.9']


def test_a_cut_metrics_line_and_a_deleted_checkpoint_are_said_and_recorded(tmp_path):
    write_study(tmp_path, epochs=15)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "launch", "--workers", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    done_before, busy = wait_for_one_done_one_running(tmp_path)
    wait_until(lambda: (busy / "checkpoint.pt").exists() and len((busy / "metrics.jsonl").read_text().splitlines()) >= 2,
               what="a checkpoint and two epochs")
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group (its workers notice and stop)
    proc.wait()
    wait_until(lambda: not worker_pids(tmp_path), what="the workers to stop")
    metrics = busy / "metrics.jsonl"
    text = metrics.read_bytes()
    metrics.write_bytes(text[:-7])  # the last line cut, as a kill in the middle of a write leaves it
    (busy / "checkpoint.pt").unlink()  # and the checkpoint gone (a cleanup script, a lost disk)

    warned = run_cli("status", cwd=tmp_path)
    assert "metrics.jsonl: its last line" in warned.stderr and "was cut by a crash" in warned.stderr, warned.stderr

    again = run_cli("launch", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no checkpoint.pt to resume from" in again.stderr and "a last line cut by a crash" in again.stderr
    assert status(tmp_path)["counts"] == {"done": 4}
    ev = events(busy)
    starts = [e for e in ev if e["event"] == "start"]
    assert any("a last line cut by a crash" in w for w in starts[-1].get("warnings", []))
    (warning,) = [e for e in ev if e["event"] == "warning"]
    assert warning["resumed"] is False and warning["reason"] == "checkpoint missing"
    kept = run_cli("status", cwd=tmp_path)  # said for as long as the run's story holds it
    assert "no checkpoint.pt to resume from" in kept.stderr
    for line in metrics.read_text().splitlines():
        json.loads(line)  # the cut line was dropped, not glued to the next one
    intact({p: (c, p.stat().st_mtime_ns) for p, c in done_before.items()})


# ---------------------------------------------------------------- places that cannot be written


@pytest.fixture
def mount_point(tmp_path):
    """A tmpfs of its own (root only), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("a real read-only or full filesystem needs root (mount -t tmpfs)")
    where = tmp_path / "mnt"
    where.mkdir()
    mounted = []

    def mount(size: str) -> Path:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_reading_commands_work_on_read_only_results_and_launch_refuses(trained, mount_point):
    d = copy_of(trained, mount_point("64m") / "s")
    expected = status(d)
    assert subprocess.run(["mount", "-o", "remount,ro", str(d.parent)]).returncode == 0
    with pytest.raises(OSError):
        (d / "probe").write_text("x")  # really read-only

    for command in (["status", "--json"], ["plan", "--json"], ["report"], ["show", expected["runs"][0]["id"]]):
        out = run_cli(*command, cwd=d)
        assert out.returncode == 0, (command, out.stderr)
        assert "Traceback" not in out.stderr
        assert "read through a temporary copy of the results index; nothing was written" in out.stderr, out.stderr
    assert json.loads(run_cli("status", "--json", cwd=d).stdout)["counts"] == expected["counts"]
    report = run_cli("report", cwd=d)
    assert "| vit " in report.stdout or "vit" in report.stdout
    assert "nothing written: " in report.stderr and "add --out DIR to write the report elsewhere" in report.stderr

    refused = run_cli("launch", "--workers", "1", cwd=d)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "[study] runs_dir: cannot write in" in refused.stderr and "Read-only file system" in refused.stderr


def test_a_write_that_does_not_fit_is_named_and_leaves_the_last_good_file(mount_point):
    import torch

    from runner.records.runfolder import DiskFull, append_jsonl, torn_tail, write_atomic

    d = mount_point("1m")
    good = d / "checkpoint.pt"
    write_atomic(good, lambda f: torch.save({"step": 1}, f))
    before = good.read_bytes()
    with pytest.raises(DiskFull) as e:  # torch's serializer hides the OS error behind its own
        write_atomic(good, lambda f: torch.save({"weights": torch.zeros(1 << 20)}, f))
    assert str(e.value) == f"no space left on device writing checkpoint.pt in {d}"
    assert good.read_bytes() == before and sorted(p.name for p in d.iterdir()) == ["checkpoint.pt"]
    append_jsonl(d / "metrics.jsonl", {"epoch": 1, "val_acc": 0.5})
    fill(d / "filler")
    with pytest.raises(DiskFull, match="no space left on device writing metrics.jsonl in "):
        append_jsonl(d / "metrics.jsonl", {"epoch": 2, "val_acc": 0.6, "pad": "x" * 8192})  # past its last page
    assert (d / "metrics.jsonl").read_text().endswith('"val_acc": 0.5}\n') or torn_tail(d / "metrics.jsonl")


def fill(path: Path) -> None:
    """Write zeros into ``path`` until the filesystem has not a byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    for block in (1 << 20, 4096, 1):
        try:
            while os.write(fd, b"\0" * block):
                pass
        except OSError:
            pass
    os.close(fd)


def test_a_full_disk_stops_new_runs_keeps_the_checkpoint_and_resumes_once_there_is_space(mount_point):
    d = mount_point("48m") / "s"
    write_study(d, epochs=40)
    (d / "experiments.toml").write_text((d / "experiments.toml").read_text().replace(
        'seeds = [0, 1]', 'seeds = [0, 1, 2]'))
    proc = subprocess.Popen([sys.executable, "-m", "runner", "launch", "--workers", "1"], cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done_before, busy = wait_for_one_done_one_running(d)
    wait_until(lambda: (busy / "checkpoint.pt").exists(), what="a checkpoint")
    before = evidence(d)
    filler = d.parent / "filler"
    fill(filler)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "no space left on device writing " in err and "Traceback" not in err, err
    assert "no new run started" in err and "left for the next launch" in err
    intact(before)
    saved = busy / "checkpoint.pt"
    assert saved.exists() and not list(busy.glob(".checkpoint.pt.*.tmp"))  # the last good one, no half-written one
    filler.unlink()

    assert states(d)[busy.name] in ("cancelled", "lost")  # to resume, not failed
    again = run_cli("launch", "--workers", "1", cwd=d)
    assert again.returncode == 0, again.stdout + again.stderr
    assert status(d)["counts"] == {"done": 6}
    engines = [e["engine"] for e in events(busy) if e["event"] == "engine"]
    assert engines[-1]["resumed_from"] is not None  # from its checkpoint, not from scratch
    intact(before)
    finished_once(d)


# ---------------------------------------------------------------- orphaned workers


def test_a_relaunch_while_the_workers_of_a_killed_launcher_live_trains_nothing_twice(tmp_path):
    write_study(tmp_path, epochs=15)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "launch", "--workers", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    done_before, busy = wait_for_one_done_one_running(tmp_path)
    alive = worker_pids(tmp_path)
    assert alive
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group: its workers live on in their own sessions
    proc.wait()
    again = run_cli("launch", "--workers", "2", cwd=tmp_path)  # at once, while they may still train
    assert again.returncode == 0, again.stdout + again.stderr
    assert status(tmp_path)["counts"] == {"done": 4}
    finished_once(tmp_path)
    intact({p: (c, p.stat().st_mtime_ns) for p, c in done_before.items()})
    for run_dir in (tmp_path / "results" / "runs").glob("[!.]*"):  # never two attempts at once
        spans = [(a["time"], e["time"]) for a in events(run_dir) if a["event"] == "start"
                 for e in events(run_dir) if e["event"] == "end" and e["attempt"] == a["attempt"]]
        spans.sort()
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), (run_dir, events(run_dir))
