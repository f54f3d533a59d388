"""A long-lived worker process: runs the cells it is handed, one after another.

torch is imported once per worker, not once per run. Two ways to feed it:

* ``--control-fd N`` (the local launcher): run folders arrive as lines on stdin;
  events go back as JSON lines on fd N. End of stdin while a run is in progress
  means the launcher is gone (even ``kill -9``): the run is marked interrupted
  and the worker exits at once, so no orphan keeps training behind a new launcher.
* ``--runs DIR...`` (a batch job, e.g. a SLURM array task): runs those folders in order.

A run whose ``summary.json`` exists is skipped; one with a ``checkpoint.pt`` resumes from
it. SIGTERM, SIGUSR1 or SIGUSR2 (SLURM's warning before a time limit or preemption) stops the
current run before its next optimizer step, after a checkpoint (marked interrupted, not
failed); SIGINT is left to the launcher. ``runner cancel`` does the same to one run through
its folder (``cancel.json``, looked at every second), and the worker goes on with the next.
A run that fails (a raised error, a diverged loss, out of memory) is recorded with its
reason and its memory is released; a launcher's worker then exits so that the launcher
starts a fresh one (nothing a failed run left behind reaches the next), a batch worker
takes its next run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from runner.records.runfolder import RunFolder, heartbeat_every_s, no_space, read_json, write_json_atomic
from runner.states import State

_stop = threading.Event()
_orphaned = threading.Event()  # the launcher is gone (its end of our stdin closed): start nothing more
_busy: dict = {}  # {"folder": RunFolder, "attempt": int} while a run is in progress
# Held while an attempt's end is written, by the run or by the launcher's death (``_read_stdin``):
# one of them has the last word. Without it a run that finished just as its launcher was killed
# could have its "done" followed by "interrupted" in attempts.jsonl.
_ending = threading.Lock()


_stop_signal: list[int] = []


def _on_sigterm(signum, frame) -> None:
    _stop_signal.append(signum)
    _stop.set()


def stopped_by() -> int | None:
    """The first signal that stopped this worker, if any (SLURM's time-limit warning asks for a requeue)."""
    return _stop_signal[0] if _stop_signal else None


def one_line(exc: BaseException) -> str:
    """The reason shown by ``runner status``: exception type and the first line of its message;
    "out of memory" first for any allocation failure, whatever its type."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
    return f"out of memory ({line})" if is_out_of_memory(exc) else line


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError, or a MemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory() -> None:
    """After a failed run: drop its tensors (reference cycles included) and hand cached CUDA
    memory back, so the next run on this worker starts from an empty device."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class _Heartbeat:
    """Rewrites heartbeat.json every few seconds, also during long epochs, and looks for a
    cancel request (or the tuner's prune verdict) every second."""

    def __init__(self, folder: RunFolder, attempt: int, progress: dict):
        self.folder, self.attempt, self.progress = folder, attempt, progress
        self.done, self.cancelled = threading.Event(), threading.Event()
        self.every = heartbeat_every_s()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def beat(self) -> None:
        try:
            self.folder.heartbeat(self.attempt, **self.progress)
        except OSError:  # a full disk must not kill the run; the next beat tries again
            pass

    def _loop(self) -> None:
        last, every = time.monotonic(), self.every
        while not self.done.wait(min(1.0, every)):
            if self.folder.cancel_requested() or self.folder.file("prune.json").exists():
                self.cancelled.set()
            if time.monotonic() - last >= every:
                self.beat()
                last = time.monotonic()

    def __enter__(self):
        self.beat()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def upstream_of(folder: RunFolder, run: dict) -> tuple[RunFolder | None, str | None]:
    """The folder of the run this one starts from (``init = "run:..."``), and why it cannot start yet."""
    init = run["config"]["train"].get("init", "scratch")
    if not init.startswith("run:"):
        return None, None
    up = RunFolder(folder.path.parent / init[len("run:"):])
    fs = up.read()
    if fs.summary is None:
        label = (fs.run or {}).get("label", up.path.name)
        return up, f"its upstream {label} is not done ({fs.state}); train it first (runner launch does)"
    return up, None


def started_from(folder: RunFolder, upstream: RunFolder) -> dict:
    """Which training of the upstream the run's weights come from (it is stale once the upstream
    trains again): noted when the run starts from the upstream's weights, kept while it resumes."""
    note = folder.file("init_from.json")
    if not folder.file("checkpoint.pt").exists() or read_json(note) is None:
        write_json_atomic(note, {"init_run": upstream.path.name,
                                 "init_run_finished_at": upstream.read().attempts[-1].get("ended_at")})
    return read_json(note)


def run_one(folder: RunFolder, device: str, provenance: dict, helpers: list[dict] | None = None,
            lost_exits: bool = False) -> tuple[State, str | None]:
    """Train one run into its folder; returns (state, reason). ``helpers``: the other ranks' devices
    of a distributed run (``gpus_per_run`` > 1), as the launcher assigned them. ``lost_exits``: a
    launcher's worker exits when another rank of its run was killed, so that the launcher retries
    the run; a batch worker records the run lost and goes on with its next."""
    claim = folder.claim(give_up=lambda: _stop.is_set() or _orphaned.is_set())
    if claim is None:
        return State.CANCELLED, "stopped while another process held the run"
    try:
        return _run_claimed(folder, device, provenance, helpers, lost_exits)
    finally:
        claim.release()


def _run_claimed(folder: RunFolder, device: str, provenance: dict, helpers: list[dict] | None,
                 lost_exits: bool) -> tuple[State, str | None]:
    from runner.train import distributed
    from runner.train.loop import Interrupted, train
    from runner.train.wandb_log import WandbMirror

    state = folder.read()  # read under the claim: what an earlier holder left is settled
    if state.state == State.CORRUPT:  # never trained over: `runner launch --rerun corrupt` sets the files aside
        return State.CORRUPT, state.reason
    if state.summary is not None:
        return State.DONE, None
    if folder.cancel_requested():
        return State.CANCELLED, "cancelled before it started"
    if folder.prune_requested():
        return State.PRUNED, "pruned before it started"
    config = state.run["config"]
    upstream, waiting = upstream_of(folder, state.run)
    meant_to_resume = bool(state.attempts) and state.attempts[-1].get("status") not in (State.DONE, State.PRUNED)
    attempt = folder.start_attempt(provenance)
    trained = folder.metrics() if meant_to_resume else []
    if trained and not folder.file("checkpoint.pt").exists():  # deleted, lost with its disk, or never written
        folder.warn(attempt, f"no checkpoint.pt to resume from: the {len(trained)} epoch(s) of earlier attempts "
                             "are trained again from scratch", resumed=False, reason="checkpoint missing")
    if waiting:
        folder.fail(attempt, waiting, "")
        return State.FAILED, waiting
    _busy.update(folder=folder, attempt=attempt)
    progress = {"epoch": 0, "epochs": config["train"]["epochs"], "metrics": {}}
    mirror = WandbMirror(state.run.get("wandb"), state.run, provenance, folder.path)

    def on_engine(engine: dict) -> None:
        folder.record_engine(attempt, engine)
        mirror.engine(engine)

    def on_epoch(epoch: int, step: int, metrics: dict) -> None:
        folder.log_metrics(attempt, epoch, step, metrics)
        mirror.epoch(epoch, step, metrics)
        progress.update(epoch=epoch, step=step, metrics=metrics)
        beat.beat()

    result: tuple[State, str | None]
    world = config["train"].get("gpus_per_run", 1)
    ranks, failed = distributed.Ranks(), True
    threads = sys.modules["torch"].get_num_threads()  # a distributed run may share them out: restored after
    try:
        from_upstream = started_from(folder, upstream) if upstream is not None else {}
        with _Heartbeat(folder, attempt, progress) as beat:
            if world > 1:
                if helpers is None:  # a batch task (SLURM) holds the resources of every rank: share them
                    helpers = distributed.default_helpers(world, device, _share_threads(world))
                ranks = distributed.start(folder.path, world, device, helpers, _threads[0],
                                          on_failure=lambda reason: folder.fail(attempt, reason, ""),
                                          on_lost=None if lost_exits else lambda why: folder.mark_lost(attempt, why))
            summary = train(config, device=device, checkpoint=folder.file("checkpoint.pt"),
                            weights=folder.file("model.pt"), upstream=upstream.file("model.pt") if upstream else None,
                            ranks=ranks, on_engine=on_engine, on_epoch=on_epoch,
                            should_stop=lambda: _stop.is_set() or beat.cancelled.is_set() or _orphaned.is_set())
            failed = False
            distributed.finish(ranks, failed=False)
        with _ending:
            folder.finish(attempt, summary | from_upstream)
            _busy.clear()
        mirror.finish(State.DONE, summary)
        result = State.DONE, None
    except Interrupted:
        failed = False
        distributed.finish(ranks, failed=False)
        pruned = folder.prune_requested() if not _stop.is_set() else None
        if pruned is not None:
            status, reason = State.PRUNED, (f"pruned by the tuner after epoch {pruned.get('epoch')} "
                                        f"({pruned.get('metric')} = {pruned.get('value')})")
        elif beat.cancelled.is_set() and not _stop.is_set():
            status, reason = State.CANCELLED, "cancelled with `runner cancel`; it resumes from its checkpoint"
        else:
            status, reason = State.INTERRUPTED, "stopped before it finished (signal or Ctrl-C); it resumes from its checkpoint"
        with _ending:
            folder.end_attempt(attempt, status, reason)
            _busy.clear()
        if pruned is not None:
            folder.file("checkpoint.pt").unlink(missing_ok=True)  # a pruned run is never resumed
        mirror.finish(State.CANCELLED, reason=status)
        result = (State.PRUNED if pruned is not None else State.CANCELLED), reason
    except Exception as e:  # the run failed, the worker goes on with the next one
        ranks.ending.set()  # the helpers' watcher leaves the outcome to this handler
        failed = True  # (also when leaving the group raised, after training)
        distributed.let_ranks_exit(ranks, wait_s=5.0)  # one process: no other ranks, nothing to wait for
        killed = distributed.killed_rank(ranks)
        with _ending:
            result = _record_failure(folder, attempt, e, ranks, killed, lost_exits, mirror)
            _busy.clear()
    finally:
        if failed:
            distributed.finish(ranks, failed=True)
        if world > 1:
            sys.modules["torch"].set_num_threads(threads)
        _busy.clear()
    if result[0] != State.DONE:
        release_memory()
    return result


def _record_failure(folder: RunFolder, attempt: int, e: Exception, ranks, killed: str | None, lost_exits: bool,
                    mirror) -> tuple[State, str | None]:
    """End an attempt that raised: a full disk interrupts it, a killed rank loses it, anything
    else fails it with its reason and traceback. Called inside the ``except`` (the traceback)."""
    from runner.train import distributed

    if no_space(e):  # not the run's fault: it stops where its last checkpoint is, and resumes later
        reason = f"{e}; it resumes from its last checkpoint at the next launch, once there is space"
        try:
            folder.end_attempt(attempt, State.INTERRUPTED, reason)
        except OSError:  # still full: the attempt ends unsaid, and the next launch resumes it all the same
            pass
        mirror.finish(State.CANCELLED, reason=reason)
        return State.INTERRUPTED, reason  # the launcher's word for "the disk is full"
    if killed is not None:
        if lost_exits:
            distributed.exit_lost(killed)  # the launcher sees this worker die and retries the run
        folder.mark_lost(attempt, killed)  # a batch task: the next `runner launch` takes the run again
        mirror.finish(State.LOST, reason=killed)
        return State.LOST, killed
    reason = distributed.failure_of(ranks) or one_line(e)
    folder.fail(attempt, reason, traceback.format_exc())
    mirror.finish(State.FAILED, reason=reason)
    return State.FAILED, reason


_threads: list[int | None] = [None]  # torch CPU threads of this worker (and of the ranks it starts)


def _share_threads(world: int) -> int:
    """CPU threads per rank when this process's cores serve all ``world`` ranks (rank 0 takes its share now)."""
    per = max(1, (_threads[0] or os.cpu_count() or 1) // world)
    sys.modules["torch"].set_num_threads(per)
    return per


def _setup(device: str, threads: int | None) -> str:
    import torch

    _threads[0] = threads
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("worker: --device cuda but no CUDA device is visible")
        return "cuda:0"  # CUDA_VISIBLE_DEVICES pins the worker to its GPU
    return device


def _read_stdin(tasks: queue.Queue, feed) -> None:
    for line in feed:
        if line.strip():
            tasks.put(line.strip())
    # stdin closed: a normal shutdown when idle, the launcher's death when a run is in progress
    _orphaned.set()  # a run handed over just before the launcher died is not started
    launcher_gone()
    tasks.put(None)


def launcher_gone() -> None:
    """The launcher died with a run in progress: mark it interrupted and exit at once, so that no
    orphan trains behind the next launcher. A run whose end is already written (it finished just
    then) keeps it, and the worker exits through its main loop instead."""
    with _ending:
        if _busy:
            try:
                _busy["folder"].end_attempt(_busy["attempt"], State.INTERRUPTED, "the launcher exited")
            finally:
                os._exit(75)


def _next_task(tasks: queue.Queue) -> str | None:
    """Wait for a run folder; None on shutdown (stdin closed or SIGTERM while idle)."""
    while not _stop.is_set():
        try:
            return tasks.get(timeout=0.5)
        except queue.Empty:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGUSR1, _on_sigterm)  # SLURM's "time is nearly up" (--signal=USR1@N)
    signal.signal(signal.SIGUSR2, _on_sigterm)  # the same, as submitit asks for it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    p = argparse.ArgumentParser(prog="runner.train.worker", description=__doc__.splitlines()[0])
    p.add_argument("--study-dir", required=True, type=Path, help="where git provenance is read")
    p.add_argument("--device", default="cpu", help="cpu or cuda (pinned by CUDA_VISIBLE_DEVICES)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--control-fd", type=int, default=None)
    p.add_argument("--runs", nargs="*", type=Path, default=[])
    p.add_argument("--max-runs", type=int, default=None, help="exit after this many runs (--isolate: 1)")
    p.add_argument("--failed-since", type=float, default=None,
                   help="batch mode: skip runs that failed after this time (a requeued task does not retry them)")
    args = p.parse_args(argv)

    from runner.records import provenance

    device = _setup(args.device, args.threads)
    prov = provenance.collect(args.study_dir, device)

    if args.control_fd is None:
        failed = 0
        for path in args.runs:
            if _stop.is_set():
                break
            folder = RunFolder(path)
            error = folder.read().error
            if args.failed_since is not None and error and error.get("time", 0) >= args.failed_since:
                failed += 1
                continue
            failed += run_one(folder, device, prov)[0] == State.FAILED
        return 1 if failed else 0

    control = os.fdopen(args.control_fd, "w", buffering=1)

    def tell(**event) -> None:
        try:
            control.write(json.dumps(event) + "\n")
        except BrokenPipeError:  # the launcher is gone; a run that finished just then keeps its end
            _orphaned.set()

    # Read the feed from a private copy of stdin and leave /dev/null as sys.stdin: a process forked
    # while this thread blocks in a read (DataLoader workers) closes sys.stdin first, and would
    # wait forever for the lock that the thread held at the fork.
    feed = os.fdopen(os.dup(0), "r")
    sys.stdin = open(os.devnull)
    tasks: queue.Queue = queue.Queue()
    threading.Thread(target=_read_stdin, args=(tasks, feed), daemon=True).start()
    runs = 0
    while not _stop.is_set():
        tell(event="ready", pid=os.getpid())
        path = _next_task(tasks)
        if path is None or _orphaned.is_set():
            break
        helpers = None
        if path.startswith("{"):  # a distributed run: {"run": folder, "helpers": [the other ranks' devices]}
            task = json.loads(path)
            path, helpers = task["run"], task["helpers"]
        folder = RunFolder(path)
        tell(event="started", run=folder.path.name)
        state, reason = run_one(folder, device, prov, helpers, lost_exits=True)
        tell(event="finished", run=folder.path.name, state=state, reason=reason)
        runs += 1
        if state == State.FAILED or runs == args.max_runs or _orphaned.is_set():
            break  # the launcher starts a fresh worker for what is left
    return 0


if __name__ == "__main__":
    sys.exit(main())
