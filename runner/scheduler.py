"""``runner launch``: run every selected run that is not done yet, and nothing twice.

The launcher holds a per-study lock (a second launcher refuses, naming the first),
writes each run's folder (``run.json``), feeds long-lived local workers from its
queue, ingests the folders into the store as runs progress, and on Ctrl-C stops
the workers cleanly: finished runs stay finished, interrupted ones run again next
time. Killed with ``kill -9``, it loses nothing either: its workers see their
stdin close, mark their run interrupted and exit.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from .backends.local import Slot, Worker, WorkerPool
from .errors import BackendError, DataError
from .plan import Run, missing_data, state_of
from .provenance import command_line, git_commit
from .runfolder import RunFolder
from .spec import Study
from .store import RunRecord, Store

INCOMPLETE = {"missing", "queued", "lost", "cancelled"}  # always (re)run
RERUNNABLE = {"failed", "stale"}  # only with --rerun


@dataclass
class LaunchResult:
    selected: int = 0
    already_done: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    interrupted: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)


class Display(Protocol):
    def started(self, run: Run, slot: Slot) -> None: ...
    def finished(self, run: Run, state: str, record: RunRecord | None, reason: str | None) -> None: ...
    def progress(self, records: dict[str, RunRecord]) -> None: ...
    def message(self, text: str) -> None: ...


def run_json(run: Run, study: Study) -> dict:
    """What run.json holds: enough to rebuild the index without the study file."""
    return {"id": run.id, "cell": run.cell, "label": run.label, "matrices": list(run.matrices),
            "study": study.name, "architecture": run.architecture, "dataset": run.dataset, "seed": run.seed,
            "config": run.config, **({"wandb": study.wandb} if study.wandb else {})}


def runs_to_do(runs: list[Run], records: dict[str, RunRecord], commit: str | None, rerun: set[str]) -> list[Run]:
    """Incomplete runs, plus failed/stale ones when asked; never done or running ones."""
    return [r for r in runs if (s := state_of(records.get(r.id), commit)) in INCOMPLETE or s in rerun]


@contextmanager
def launch_lock(runs_dir: Path) -> Iterator[None]:
    """One launcher per study: the lock dies with its process, even on kill -9."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / ".launch.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        try:
            holder = json.loads(f.read() or "{}")
        except json.JSONDecodeError:
            holder = {}
        f.close()
        since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0))) if holder else "?"
        raise BackendError(
            f"another launcher is running this study (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {since}: {holder.get('command', '?')}); wait for it or stop it with Ctrl-C") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                        "command": command_line()}))
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def launcher_running(runs_dir: Path) -> bool:
    """True while some launcher holds the study's lock (for ``status``: planned runs are then queued)."""
    path = runs_dir / ".launch.lock"
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def refuse_missing_data(todo: list[Run], selected: list[Run]) -> None:
    """Before any worker starts: every dataset the runs to do need must be on disk, or the
    launch stops with what is missing and how to leave those cells out."""
    missing = missing_data(todo)
    if not missing:
        return
    absent = {m.dataset for m in missing}
    present = sorted({r.dataset for r in selected} - absent)
    lines = [f"dataset {m.dataset} ({m.runs} run(s) to do): {m.problem}" for m in missing]
    hint = (f"or leave those cells out: --where dataset={','.join(present)}" if present else
            "nothing else selected can run without it")
    raise DataError("\n".join(lines + [hint]))


def launch(study: Study, runs: list[Run], store: Store, slots: list[Slot], display: Display, *,
           rerun: set[str] = frozenset(), stop_grace_s: float = 30.0) -> LaunchResult:
    result = LaunchResult(selected=len(runs))
    with launch_lock(study.runs_dir):
        store.ingest(study.runs_dir)
        records = store.runs([r.id for r in runs])
        todo = runs_to_do(runs, records, git_commit(study.dir), rerun)
        result.already_done = sum(1 for r in runs if records.get(r.id) and records[r.id].state == "done")
        if not todo:
            return result
        refuse_missing_data(todo, runs)
        for run in todo:
            folder = RunFolder(study.runs_dir / run.id)
            folder.create(run_json(run, study))
            if records.get(run.id) and records[run.id].state == "done":  # stale, rerun on request
                folder.supersede()
        store.ingest(study.runs_dir, [r.id for r in todo])
        _drive(study, deque(todo), store, slots, display, result, stop_grace_s)
        store.ingest(study.runs_dir, [r.id for r in todo])
    return result


def _drive(study, queue: deque, store, slots, display, result, stop_grace_s) -> None:
    by_id = {r.id: r for r in queue}
    pool = WorkerPool(study_dir=study.dir, log_dir=study.runs_dir / ".workers")
    for slot in slots[: len(queue)]:
        pool.start(slot)
    in_flight: dict[str, Worker] = {}
    last_ingest = 0.0
    try:
        while queue or in_flight or pool.workers:
            for w, event in pool.poll(0.5):
                kind = event.get("event")
                if kind == "ready":
                    w.started = True
                    if queue:
                        run = queue.popleft()
                        w.send(study.runs_dir / run.id)
                        in_flight[run.id] = w
                        display.started(run, w.slot)
                    else:
                        w.close_input()
                elif kind == "finished":
                    rid = event["run"]
                    in_flight.pop(rid, None)
                    w.run_id = None
                    _record_finish(store, study, by_id[rid], event["state"], event.get("reason"), display, result)
                elif kind == "eof":
                    _worker_exited(w, pool, queue, in_flight, store, study, by_id, display, result)
            if in_flight and time.monotonic() - last_ingest > 1.0:
                store.ingest(study.runs_dir, list(in_flight))
                display.progress(store.runs(list(in_flight)))
                last_ingest = time.monotonic()
    except KeyboardInterrupt:
        result.interrupted = True
        display.message(f"stopping: {len(in_flight)} running run(s) end at their next batch; finished runs are kept")
        pool.shutdown(stop_grace_s)
        result.cancelled += len(in_flight)
    finally:
        pool.shutdown(5.0)


def _record_finish(store, study, run, state, reason, display, result) -> None:
    store.ingest(study.runs_dir, [run.id])
    record = store.runs([run.id]).get(run.id)
    if state == "done":
        result.done += 1
    elif state == "failed":
        result.failed += 1
        result.failures.append((run.label, reason or "?"))
    else:
        result.cancelled += 1
    display.finished(run, state, record, reason)


def _worker_exited(w, pool, queue, in_flight, store, study, by_id, display, result) -> None:
    """A worker's pipe closed: a normal exit, or a death in the middle of a run."""
    pool.retire(w)
    code = w.proc.wait()
    rid = w.run_id
    if rid is not None and rid in in_flight:
        in_flight.pop(rid)
        folder = RunFolder(study.runs_dir / rid)
        fs = folder.read()
        if fs.state not in ("done", "failed", "cancelled") and fs.attempts:
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            folder.fail(fs.attempts[-1]["attempt"], f"worker process died ({how}); see {w.log_path}", _tail(w.log_path))
        fs = folder.read()
        _record_finish(store, study, by_id[rid], fs.state, fs.reason, display, result)
    if not w.started:
        raise BackendError(f"a worker could not start (exit code {code}); its log {w.log_path} ends with: "
                           f"{_tail(w.log_path).strip().splitlines()[-1:] or ['(empty)']}")
    if queue and code != 0:
        pool.start(w.slot)  # replace the dead worker


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
