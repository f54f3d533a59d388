"""One launcher per study, and what it is working on.

``runs_dir/.launch.lock`` is held with ``flock`` for the life of a launch, so the lock
dies with its process, even on ``kill -9``, and a second launcher refuses at once,
naming the first. The file also says who holds it and which runs it was asked to do,
so ``runner status`` can show them as queued and ``runner cancel`` knows which runs
it may stop before they start.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from runner.errors import BackendError
from runner.records.provenance import command_line

LOCK_NAME = ".launch.lock"


class HeldLock:
    """The lock of the running launcher; ``announce`` publishes the runs it will do."""

    def __init__(self, f: IO[str]):
        self._f = f
        self._info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                      "command": command_line(), "runs": []}
        self._write()

    def announce(self, run_ids: list[str]) -> None:
        self._info["runs"] = list(run_ids)
        self._write()

    def _write(self) -> None:
        self._f.seek(0)
        self._f.truncate()
        self._f.write(json.dumps(self._info))
        self._f.flush()


@contextmanager
def launch_lock(runs_dir: Path) -> Iterator[HeldLock]:
    """Hold the study's lock, or raise naming the launcher that holds it."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    f = open(runs_dir / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_info(f)
        f.close()
        since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0))) if holder else "?"
        raise BackendError(
            f"another launcher is running this study (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {since}: {holder.get('command', '?')}); wait for it, stop it with Ctrl-C, "
            "or stop some of its runs with `runner cancel`") from None
    try:
        yield HeldLock(f)
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def running_launch(runs_dir: Path) -> dict | None:
    """What the running launcher published (``pid``, ``host``, ``command``, ``runs``), or None when
    no launcher holds the lock."""
    path = runs_dir / LOCK_NAME
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(20):  # the holder may be between its truncate and its write
                info = _read_info(f)
                if info:
                    return info
                time.sleep(0.05)
            return {}
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


def _read_info(f: IO[str]) -> dict:
    f.seek(0)
    try:
        info = json.loads(f.read() or "{}")
    except json.JSONDecodeError:  # caught between truncate and write
        info = {}
    return info if isinstance(info, dict) else {}
