"""The run folder: the journal of one run, ``runs_dir/<run id>/``.

Every file is either replaced atomically (temp file, fsync, rename) or appended
one JSON line at a time, so a crash, a kill or a full disk leaves each file
either as it was or complete; a torn last line is ignored on read.

    run.json        id, cell, label, matrices, resolved config   (written by the launcher)
    attempts.jsonl  {"event": "start", attempt, provenance} / {"event": "engine", attempt, engine}
                    / {"event": "end", attempt, status, reason}; status is done, failed, interrupted,
                    cancelled, pruned, or lost (written by the launcher when the worker died or hung)
    metrics.jsonl   one line per epoch: {attempt, epoch, step, time, <metric>: value, ...}
    heartbeat.json  {time, pid, host, attempt, epoch, epochs, metrics}, replaced every few seconds
    checkpoint.pt   where an unfinished run resumes from (runner/train/checkpoint.py); removed once done
    model.pt        the selected weights (``weights_only`` loadable)
    error.json      {attempt, reason, traceback}: the failed mark
    cancel.json     {time, pid, host, command}: ``runner cancel`` asked the run to stop (a queued one
                    never starts, a running one checkpoints and stops); the next launch clears it
    prune.json      {time, epoch, value, trial}: the tuner judged this trial's run not worth finishing;
                    it stops for good (state pruned) and keeps its metrics
    summary.json    the summary metrics: the done mark, written last

Workers write folders, never the database; ``state()`` derives the run's state
from the files alone, so the store can always be rebuilt from them.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from runner.errors import BackendError
from runner.records.summary import Summary
from runner.states import State


def lost_after_s() -> float:
    """A heartbeat older than this means the worker is gone (dead, hung, or its node lost).
    ``RUNNER_LOST_AFTER_S`` changes it, e.g. for a filesystem whose writes show up late."""
    text = os.environ.get("RUNNER_LOST_AFTER_S", "90")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise BackendError(f"RUNNER_LOST_AFTER_S={text}: expected a number of seconds > 0 (default 90)")
    return value


def heartbeat_every_s() -> float:
    """Every 5 s, or often enough that a live run beats several times within ``lost_after_s``."""
    return min(5.0, lost_after_s() / 4)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: a temp file is private (0600) until chmod


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace ``path`` with what ``write`` writes into a binary file, all or nothing (also on a
    full disk or a kill): a temp file beside it, fsync, rename. The file gets the permissions a
    plain ``open`` would give it, so results stay readable by the group that shares them."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON, all or nothing."""
    text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=True)
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one JSON line and flush it to disk."""
    line = json.dumps(obj, sort_keys=True, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line; a line torn by a crash (only ever the last) is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@dataclass(frozen=True)
class FolderState:
    """What the files of a run folder say, read once."""

    run: dict | None
    state: State  # planned, running, done, failed, lost, cancelled, pruned
    attempts: list[dict]  # merged start/end events, one dict per attempt
    summary: Summary | None
    error: dict | None
    heartbeat: dict | None
    reason: str | None


class RunFolder:
    # new names go last: ``still_done`` finds parts of an indexed signature by position
    FILES = ("run.json", "attempts.jsonl", "metrics.jsonl", "heartbeat.json", "error.json", "cancel.json",
             "summary.json", "prune.json")

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------ writing (launcher: create; worker: the rest)

    def create(self, run: dict) -> None:
        """Write run.json unless it already says the same (labels and matrices may change)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if read_json(self.file("run.json")) != run:
            write_json_atomic(self.file("run.json"), run)

    def start_attempt(self, provenance: dict) -> int:
        """Open a new attempt; clears the failed mark of an earlier one (its story stays in attempts.jsonl)."""
        number = 1 + sum(1 for e in read_jsonl(self.file("attempts.jsonl")) if e.get("event") == "start")
        try:
            os.unlink(self.file("error.json"))
        except FileNotFoundError:
            pass
        append_jsonl(self.file("attempts.jsonl"), {"event": "start", "attempt": number, "time": time.time(),
                                                   "pid": os.getpid(), "host": socket.gethostname(),
                                                   "provenance": provenance})
        return number

    def end_attempt(self, attempt: int, status: State, reason: str | None = None) -> None:
        append_jsonl(self.file("attempts.jsonl"), {"event": "end", "attempt": attempt, "time": time.time(),
                                                   "status": status, "reason": reason})

    def record_engine(self, attempt: int, engine: dict) -> None:
        """The speed switches an attempt resolved (precision, compile, ...) and where it resumed from."""
        append_jsonl(self.file("attempts.jsonl"), {"event": "engine", "attempt": attempt, "engine": engine})

    def log_metrics(self, attempt: int, epoch: int, step: int, metrics: dict[str, float]) -> None:
        append_jsonl(self.file("metrics.jsonl"), {"attempt": attempt, "epoch": epoch, "step": step,
                                                  "time": time.time(), **metrics})

    def heartbeat(self, attempt: int, **progress: Any) -> None:
        write_json_atomic(self.file("heartbeat.json"), {"time": time.time(), "pid": os.getpid(),
                                                        "host": socket.gethostname(), "attempt": attempt, **progress})

    def fail(self, attempt: int, reason: str, traceback: str) -> None:
        write_json_atomic(self.file("error.json"), {"attempt": attempt, "reason": reason,
                                                    "traceback": traceback, "time": time.time()})
        self.end_attempt(attempt, State.FAILED, reason)

    def mark_lost(self, attempt: int, reason: str) -> None:
        """The launcher's word on an attempt whose worker died or stopped beating: it will not end."""
        self.end_attempt(attempt, State.LOST, reason)

    def request_cancel(self, by: dict) -> None:
        write_json_atomic(self.file("cancel.json"), {"time": time.time(), **by})

    def cancel_requested(self) -> bool:
        return self.file("cancel.json").exists()

    def request_prune(self, why: dict) -> None:
        """The tuner's verdict: stop this run for good (it is not resumed, unlike a cancelled one)."""
        write_json_atomic(self.file("prune.json"), {"time": time.time(), **why})

    def prune_requested(self) -> dict | None:
        return read_json(self.file("prune.json"))

    def clear_cancel(self) -> None:
        try:
            os.unlink(self.file("cancel.json"))
        except FileNotFoundError:
            pass

    def supersede(self) -> None:
        """Lift the done mark so the run trains again (``--rerun stale``); the old summary is kept
        beside it as ``summary.superseded-<attempt>.json``."""
        attempts = _merge_attempts(read_jsonl(self.file("attempts.jsonl")))
        n = attempts[-1]["attempt"] if attempts else 0
        try:
            os.replace(self.file("summary.json"), self.file(f"summary.superseded-{n}.json"))
        except FileNotFoundError:
            pass

    def finish(self, attempt: int, summary: Summary) -> None:
        """Mark the run done: summary.json is the last file a successful run writes; the checkpoint
        is dropped after it (model.pt keeps the selected weights)."""
        write_json_atomic(self.file("summary.json"), summary)
        self.end_attempt(attempt, State.DONE)
        try:
            os.unlink(self.file("checkpoint.pt"))
        except FileNotFoundError:
            pass

    # ------------------------------------------------ reading

    def signature(self) -> str:
        """Changes whenever any journal file changes; lets ingestion skip untouched folders.
        (Plain strings, not Path joins: a status over 10,000 folders makes 70,000 of these.)"""
        parts, base = [], f"{self.path}{os.sep}"
        for name in self.FILES:
            try:
                st = os.stat(base + name)
                parts.append(f"{st.st_size}:{st.st_mtime_ns}")
            except FileNotFoundError:
                parts.append("-")
        return "|".join(parts)

    def metrics(self) -> list[dict]:
        """Metric lines of the run's history: for each epoch, the line of the latest attempt
        (a restarted run overwrites the epochs it repeats)."""
        latest: dict[int, dict] = {}
        for line in read_jsonl(self.file("metrics.jsonl")):
            e = line.get("epoch")
            if e is not None and (e not in latest or line.get("attempt", 0) >= latest[e].get("attempt", 0)):
                latest[e] = line
        last_attempt = max((m.get("attempt", 0) for m in latest.values()), default=0)
        # epochs beyond where the latest attempt got belong to an abandoned attempt
        last_epoch = max((e for e, m in latest.items() if m.get("attempt", 0) == last_attempt), default=-1)
        return [latest[e] for e in sorted(latest) if e <= last_epoch]

    def read(self, *, now: float | None = None) -> FolderState:
        now = time.time() if now is None else now
        run = read_json(self.file("run.json"))
        attempts = _merge_attempts(read_jsonl(self.file("attempts.jsonl")))
        summary, error = read_json(self.file("summary.json")), read_json(self.file("error.json"))
        heartbeat = read_json(self.file("heartbeat.json"))
        last = attempts[-1] if attempts else None
        cancelled = self.cancel_requested()
        status = last.get("status") if last else None
        reason = None
        if summary is not None:
            state = State.DONE
        elif error is not None:
            state, reason = State.FAILED, error.get("reason")
        elif status == State.PRUNED or (last is None and self.file("prune.json").exists()):
            state, reason = State.PRUNED, (last or {}).get("reason") or "pruned before it started"
        elif last is None:
            state, reason = (State.CANCELLED, "cancelled before it started") if cancelled else (State.PLANNED, None)
        elif status in (State.INTERRUPTED, State.CANCELLED, State.LOST):
            state, reason = (State.LOST if status == State.LOST else State.CANCELLED), last.get("reason")
        elif status in (State.DONE, State.FAILED):  # its mark file was removed by hand
            state, reason = State.LOST, "attempt ended but its summary.json/error.json is missing"
        elif _alive(last, heartbeat, now):
            state = State.RUNNING
        elif cancelled:
            state, reason = State.CANCELLED, "cancelled; its worker stopped before saying so"
        else:
            state, reason = State.LOST, "the worker stopped without finishing (killed or crashed)"
        return FolderState(run, state, attempts, summary, error, heartbeat, reason)


def still_done(folder: str, indexed_sig: str | None) -> bool:
    """True when a folder indexed as done still holds the same summary.json and attempts.jsonl.
    Nothing else in a done run's folder changes until its summary is moved away (``supersede``,
    before it trains again); the attempt's end line follows the summary, hence the second file.
    So two stats stand for the seven of ``RunFolder.signature``: what keeps ``runner status``
    quick over 10,000 finished runs, and on a network filesystem. A plain string path: building
    10,000 Path objects costs more than the stats."""
    if indexed_sig is None:
        return False
    parts = indexed_sig.split("|")
    for name in ("summary.json", "attempts.jsonl"):
        try:
            st = os.stat(f"{folder}{os.sep}{name}")
        except FileNotFoundError:
            return False
        if parts[RunFolder.FILES.index(name)] != f"{st.st_size}:{st.st_mtime_ns}":
            return False
    return True


def _merge_attempts(events: list[dict]) -> list[dict]:
    by_number: dict[int, dict] = {}
    for e in events:
        a = by_number.setdefault(e.get("attempt", 0), {"attempt": e.get("attempt", 0)})
        if e.get("event") == "start":
            a.update(started_at=e.get("time"), pid=e.get("pid"), host=e.get("host"),
                     provenance=e.get("provenance") or {})
        elif e.get("event") == "engine":
            a["engine"] = e.get("engine")
        elif e.get("event") == "end":
            a.update(ended_at=e.get("time"), status=e.get("status"), reason=e.get("reason"))
    return [by_number[k] for k in sorted(by_number)]


def _alive(attempt: dict, heartbeat: dict | None, now: float) -> bool:
    """A started attempt is alive while its heartbeat is fresh; on this host a dead pid settles it at once."""
    beat = heartbeat if heartbeat and heartbeat.get("attempt") == attempt["attempt"] else None
    last_sign = (beat or {}).get("time") or attempt.get("started_at") or 0.0
    if attempt.get("host") == socket.gethostname() and attempt.get("pid") and not _pid_alive(attempt["pid"]):
        return False
    return now - last_sign < lost_after_s()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not running
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
