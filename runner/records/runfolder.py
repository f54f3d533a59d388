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

import errno
import fcntl
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


def no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno == errno.ENOSPC


class DiskFull(OSError):
    """No space left on the device while writing one file of a run: named, so that the reason a
    run stopped says which file and where (a write to an open file reports no file name)."""

    def __init__(self, path: Path | str):
        super().__init__(errno.ENOSPC, "No space left on device", str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"no space left on device writing {self.path.name} in {self.path.parent}"


def _nearly_full(folder: Path) -> bool:
    """Less than a MiB left: what a writer that hides the OS error behind its own (torch's
    serializer raises a RuntimeError) ran into."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def _named(path: Path, e: OSError) -> OSError:
    return DiskFull(path) if no_space(e) and not isinstance(e, DiskFull) else e


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace ``path`` with what ``write`` writes into a binary file, all or nothing (also on a
    full disk or a kill): a temp file beside it, fsync, rename. The file gets the permissions a
    plain ``open`` would give it, so results stay readable by the group that shares them.
    A full disk raises ``DiskFull`` naming ``path``, and leaves the file as it was."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _named(path, e) from e
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _named(path, e) from e
        if isinstance(e, Exception) and _nearly_full(path.parent):  # torch.save says "file write failed"
            raise DiskFull(path) from e
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON, all or nothing."""
    text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=True)
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one JSON line and flush it to disk. A line left cut by a crash is dropped first:
    appended to, it would swallow the new line too. A full disk raises ``DiskFull``."""
    line = json.dumps(obj, sort_keys=True, allow_nan=True) + "\n"
    try:
        drop_torn_line(path)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _named(path, e) from e


def torn_tail(path: Path | str) -> int:
    """Bytes of a last line cut by a crash (no end of line after it); 0 for a whole file."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":  # the common case, read in one byte
                return 0
            f.seek(max(0, size - 65536))
            tail = f.read()
    except FileNotFoundError:
        return 0
    if tail.endswith(b"\n"):
        return 0
    cut = tail.rfind(b"\n")
    return len(tail) - cut - 1 if cut >= 0 else size


def drop_torn_line(path: Path) -> int:
    """Cut a torn last line off ``path``; returns its length in bytes (0: there was none)."""
    n = torn_tail(path)
    if n:
        with open(path, "r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) - n)
    return n


def _text(path: Path | str) -> str:
    """A file's text; run folders are read by plain string paths (``RunFolder.at``): over 10,000
    folders the Path objects cost more than the reads."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_json(path: Path | str) -> Any | None:
    try:
        return json.loads(_text(path))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def parse_json(path: Path | str) -> tuple[Any | None, str | None]:
    """(value, problem): a missing file is (None, None); one that cannot be parsed is (None, what
    is wrong with it). A results file is written atomically, so garbage in one is damage (a disk,
    a hand edit, a sync tool), never a write in progress."""
    try:
        return json.loads(_text(path)), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{os.path.basename(path)}: {e}"


def parse_jsonl(path: Path | str) -> tuple[list[dict], str | None]:
    """(lines, problem): every line of an appended journal; a torn last line (a crash mid-append)
    is skipped, any other line that cannot be parsed is a problem naming its number."""
    name = os.path.basename(path)
    try:
        text = _text(path)
    except FileNotFoundError:
        return [], None
    except (OSError, UnicodeDecodeError) as e:
        return [], f"{name}: {e}"
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # no end of line after it: cut by a crash while being written
                continue
            return out, f"{name} line {i}: {e}"
        if not isinstance(value, dict):
            return out, f"{name} line {i}: not a JSON object"
        out.append(value)
    return out, None


def read_jsonl(path: Path | str) -> list[dict]:
    """Every complete line; a line torn by a crash (only ever the last) is skipped."""
    try:
        text = _text(path)
    except FileNotFoundError:
        return []
    if text.endswith("\n") and "\n\n" not in text and not text.startswith("\n"):
        try:  # one parse of the whole file, the common case: each line whole, none empty
            whole = json.loads("[" + text[:-1].replace("\n", ",") + "]")
            if all(isinstance(line, dict) for line in whole):
                return whole
        except json.JSONDecodeError:
            pass
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
    warnings: tuple[str, ...] = ()  # what the run lost on the way (a torn metrics line, a missing checkpoint)


_ATTEMPTS_KEPT = 1024  # runs whose parsed attempts.jsonl this process keeps (RunFolder._attempt_events)
_ATTEMPTS_SEEN: dict[str, tuple[str, list[dict], str | None]] = {}


class RunFolder:
    # new names go last: ``still_done`` finds parts of an indexed signature by position
    FILES = ("run.json", "attempts.jsonl", "metrics.jsonl", "heartbeat.json", "error.json", "cancel.json",
             "summary.json", "prune.json")

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._base = f"{self.path}{os.sep}"

    def file(self, name: str) -> Path:
        return self.path / name

    def at(self, name: str) -> str:
        """``file(name)`` as a plain string: what the readers over thousands of folders use."""
        return self._base + name

    # ------------------------------------------------ writing (launcher: create; worker: the rest)

    def create(self, run: dict) -> None:
        """Write run.json unless it already says the same (labels and matrices may change)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if read_json(self.file("run.json")) != run:
            write_json_atomic(self.file("run.json"), run)

    def start_attempt(self, provenance: dict) -> int:
        """Open a new attempt; clears the failed mark of an earlier one (its story stays in
        attempts.jsonl). A metrics line cut by the crash of an earlier attempt is dropped, and the
        attempt says so (its epoch trains again: it resumes from the checkpoint before it)."""
        number = 1 + sum(1 for e in read_jsonl(self.file("attempts.jsonl")) if e.get("event") == "start")
        try:
            os.unlink(self.file("error.json"))
        except FileNotFoundError:
            pass
        warnings = []
        if cut := drop_torn_line(self.file("metrics.jsonl")):
            warnings.append(f"metrics.jsonl: a last line cut by a crash ({cut} bytes) was dropped at attempt {number}")
        append_jsonl(self.file("attempts.jsonl"), {"event": "start", "attempt": number, "time": time.time(),
                                                   "pid": os.getpid(), "host": socket.gethostname(),
                                                   "provenance": provenance, **({"warnings": warnings} if warnings else {})})
        return number

    def warn(self, attempt: int, warning: str, **fields: Any) -> None:
        """Something this attempt lost on the way (``runner status`` shows it with the run)."""
        append_jsonl(self.file("attempts.jsonl"), {"event": "warning", "attempt": attempt, "warning": warning, **fields})

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

    def claim(self, give_up: Callable[[], bool]) -> "Claim | None":
        """Hold the run for training: an exclusive ``flock`` on ``.claim`` in its folder, waited for
        while another process holds it (an orphaned worker of a killed launcher finishing its last
        batch), so that two processes never train one run at once. The kernel lets go when the
        holder exits, however it dies. None when ``give_up()`` turned true while waiting."""
        f = open(self.file(".claim"), "a+")
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return Claim(f)
            except BlockingIOError:
                if give_up():
                    f.close()
                    return None
                time.sleep(0.2)

    def request_cancel(self, by: dict) -> None:
        write_json_atomic(self.file("cancel.json"), {"time": time.time(), **by})

    def cancel_requested(self) -> bool:
        return os.path.exists(self.at("cancel.json"))

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
        parts, base = [], self._base
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
        for line in read_jsonl(self.at("metrics.jsonl")):
            e = line.get("epoch")
            if e is not None and (e not in latest or line.get("attempt", 0) >= latest[e].get("attempt", 0)):
                latest[e] = line
        last_attempt = max((m.get("attempt", 0) for m in latest.values()), default=0)
        # epochs beyond where the latest attempt got belong to an abandoned attempt
        last_epoch = max((e for e, m in latest.items() if m.get("attempt", 0) == last_attempt), default=-1)
        return [latest[e] for e in sorted(latest) if e <= last_epoch]

    def metrics_after(self, size: int) -> list[dict] | None:
        """The metric lines appended since ``metrics.jsonl`` was ``size`` bytes long, for an index
        that read it then and saw no attempt start or end since (the lines are all the current
        attempt's, each a new epoch): from the start of the line that was then still being
        written, if any. None when that start is not within the last 64 KiB read then (the
        caller reads the whole file)."""
        window = 65536
        try:
            with open(self.at("metrics.jsonl"), "rb") as f:
                start = max(0, size - window)
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return []
        cut = data.rfind(b"\n", 0, size - start)  # the end of the last line that was whole at ``size``
        if cut < 0 and start > 0:
            return None
        out = []
        for line in data[cut + 1:].split(b"\n")[:-1]:  # the last piece has no end of line yet: torn
            try:
                value = json.loads(line)
            except ValueError:  # not this reader's to judge: a full read names the line (corrupt)
                return None
            if isinstance(value, dict) and value.get("epoch") is not None:
                out.append(value)
        return out

    def read(self, *, now: float | None = None, sig: str | None = None, plan: bool = True) -> FolderState:
        """What the files say. ``sig``: the folder's ``signature()`` just taken, which says which
        files exist; those it says are missing are not opened (an ingest of 10,000 folders would
        open 40,000 missing files). A file made after it changes the signature: the next ingest
        reads the folder again. Without ``plan``, run.json is not read (``run`` is None): what a
        poll does of a run whose signature says it did not change."""
        now = time.time() if now is None else now
        parts = sig.split("|") if sig is not None else None
        there = (lambda name: True) if parts is None else (lambda name: parts[self.FILES.index(name)] != "-")
        # the launcher's copy of the plan: rewritten by the next launch
        run = read_json(self.at("run.json")) if plan else None
        events, bad_attempts = self._attempt_events(parts[self.FILES.index("attempts.jsonl")] if parts else None)
        attempts = _merge_attempts(events)
        summary, bad_summary = parse_json(self.at("summary.json")) if there("summary.json") else (None, None)
        error, bad_error = parse_json(self.at("error.json")) if there("error.json") else (None, None)
        # replaced every few seconds: a bad one is just old
        heartbeat = read_json(self.at("heartbeat.json")) if there("heartbeat.json") else None
        last = attempts[-1] if attempts else None
        cancelled = there("cancel.json") and self.cancel_requested()
        status = last.get("status") if last else None
        reason = None
        problem = bad_summary or bad_error or bad_attempts
        if problem:  # never retrained or overwritten without --rerun corrupt
            state, reason = State.CORRUPT, f"cannot be parsed: {problem}"
        elif summary is not None:
            state = State.DONE
        elif error is not None:
            state, reason = State.FAILED, error.get("reason")
        elif status == State.PRUNED or (last is None and there("prune.json") and os.path.exists(self.at("prune.json"))):
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
        warnings = [w for a in attempts for w in a.get("warnings", ())]
        if state != State.RUNNING and there("metrics.jsonl") and (cut := torn_tail(self.at("metrics.jsonl"))):
            warnings.append(f"metrics.jsonl: its last line ({cut} bytes) was cut by a crash and is not read; "
                            "the next attempt drops it and trains that epoch again")
        return FolderState(run, state, attempts, summary, error, heartbeat, reason, tuple(warnings))

    def _attempt_events(self, stamp: str | None) -> tuple[list[dict], str | None]:
        """``parse_jsonl`` of attempts.jsonl, remembered by its ``stamp`` in a signature (size and
        modification time): a launch's poll reads every run in flight every few seconds, and their
        attempts change twice a run. (A stamp taken before an append is never met again: the
        append changes the size.)"""
        path = self.at("attempts.jsonl")
        seen = _ATTEMPTS_SEEN.get(path)
        if stamp is not None and seen is not None and seen[0] == stamp:
            return seen[1], seen[2]
        events, problem = parse_jsonl(path)
        if stamp is not None and stamp != "-":
            if len(_ATTEMPTS_SEEN) >= _ATTEMPTS_KEPT:
                _ATTEMPTS_SEEN.clear()
            _ATTEMPTS_SEEN[path] = (stamp, events, problem)
        return events, problem

    def unparseable(self) -> list[str]:
        """The results files of this folder that cannot be parsed (what makes it corrupt)."""
        bad = [name for name in ("summary.json", "error.json") if parse_json(self.file(name))[1]]
        return bad + (["attempts.jsonl"] if parse_jsonl(self.file("attempts.jsonl"))[1] else [])

    def set_aside_corrupt(self) -> list[Path]:
        """``--rerun corrupt``: move each file that cannot be parsed aside (``NAME.corrupt-<time>``),
        kept for a look, so that the run trains again; returns where they went."""
        moved = []
        for name in self.unparseable():
            target = self.file(f"{name}.corrupt-{int(time.time())}")
            os.replace(self.file(name), target)
            moved.append(target)
        return moved


class Claim:
    """A held run claim (``RunFolder.claim``); closing the file lets it go."""

    def __init__(self, f):
        self._file = f

    def release(self) -> None:
        self._file.close()


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
            if e.get("warnings"):
                a.setdefault("warnings", []).extend(e["warnings"])
        elif e.get("event") == "engine":
            a["engine"] = e.get("engine")
        elif e.get("event") == "warning":
            a.setdefault("warnings", []).append(e.get("warning"))
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
