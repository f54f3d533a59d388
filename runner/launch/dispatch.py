"""The launcher's event loop: keep every slot busy until the queue is empty.

* **Order.** When there are more runs than slots, the longest expected run goes first
  (``runner/launch/estimate.py``), so the short ones fill the gaps at the end. The pool is started
  before the estimate, so the workers import torch while it is computed.
* **Long-lived workers.** A worker takes run after run; one whose run failed exits and a
  fresh one takes its slot (nothing a failed run left behind reaches the next), and with
  ``isolate`` every run gets a fresh process.
* **Liveness.** A worker that dies in the middle of a run (killed, segfault, the OOM killer)
  closes its pipe; one that hangs (stopped, stuck in a driver) stops rewriting its run's
  heartbeat and is killed once the heartbeat is older than ``lost_after_s``. Either way the
  attempt is marked lost, a new worker takes the slot and the run goes back to the front of
  the queue, resuming from its checkpoint, ``retries`` times at most.
* **Cancel.** A queued run whose folder holds a cancel request is skipped; a running one
  stops by itself (the worker watches for the request).
* **Stages.** A run that starts from another run's weights waits until that upstream is done;
  if the upstream fails or is not part of the launch and not done, the run is blocked (left to
  a later launch) and said so.
* **Multi-slot runs.** A run with ``gpus_per_run = N`` takes N idle workers: the first trains
  it as rank 0 and starts the other ranks on the others' GPUs (``runner/train/distributed.py``); the
  others are lent to it until it ends. While it gathers its N slots, slots that free up wait for it
  (it keeps its place at the head of the queue); the slots it does not need take other runs.
* **Feeds.** A launch knows its runs up front; a tuner (``runner/tune/tuner.py``) makes them as it
  goes: with a ``feed``, a slot that runs dry asks it for more, every settled run is handed
  to it, and it looks at the runs in flight every second (to prune them).

What each slot is doing is one phase of ``runner/launch/slots.py``; what a run cost this launch
(lost attempts, hand-overs to dead workers) is one ``Tries`` record per run.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runner.backends.local import Worker, WorkerPool
from runner.errors import WorkerStartError
from runner.launch.slots import Phase, SlotRecord, SlotTable
from runner.plan.stages import depths
from runner.errors import StoreError
from runner.records.runfolder import RunFolder, no_space
from runner.states import State
from runner.train.distributed import EXIT_RANK_LOST

WATCH_EVERY_S = 2.0  # how often in-flight heartbeats are looked at
INGEST_EVERY_S = 1.0
MAX_UNSENT = 3  # a run handed to workers that had just died this often spends its tries as a lost run


class Feed(Protocol):
    def more(self) -> list: ...  # runs for a free slot (none: nothing to add now)
    def settled(self, run, state: State, reason: str | None) -> None: ...
    def watch(self, in_flight: list[str]) -> None: ...


@dataclass
class Tries:
    """What this launch has spent on one run."""

    lost: int = 0  # attempts lost (its worker died or hung), counted against --retries
    unsent: int = 0  # times it was handed to a worker that had just died (it never reached one)


class Dispatcher:
    def __init__(self, study, todo, store, slots, display, result, lock, *, retries: int, isolate: bool,
                 lost_after_s: float, stop_grace_s: float, feed: Feed | None = None, pool: WorkerPool | None = None):
        """``pool``: the workers' processes (default: a ``WorkerPool`` of the study; the dispatcher's
        unit tests pass in-process fakes)."""
        self.study, self.store, self.display, self.result = study, store, display, result
        self.lock = lock  # publishes the runs not settled yet, for `runner status` and `runner cancel`
        self.unsettled = {r.id for r in todo}
        self.queue = deque(todo)
        self.by_id = {r.id: r for r in todo}
        self.retries, self.isolate, self.lost_after_s, self.stop_grace_s = retries, isolate, lost_after_s, stop_grace_s
        self.tries: defaultdict[str, Tries] = defaultdict(Tries)
        self.start_kills: defaultdict[str, int] = defaultdict(int)  # per slot: workers killed in a row while starting
        self.slots = SlotTable(slots)
        self.pool = pool if pool is not None else WorkerPool(study_dir=study.dir, log_dir=study.runs_dir / ".workers")
        self.feed = feed
        self.disk_full: str | None = None  # once a run stopped for want of space: no new run starts

    def folder(self, run_id: str) -> RunFolder:
        return RunFolder(self.study.runs_dir / run_id)

    def in_flight(self) -> list[str]:
        return [rec.run_id for rec in self.slots.in_phase(Phase.BUSY)]

    def run(self) -> None:
        last_ingest = last_watch = 0.0
        try:
            while self.feed and len(self.queue) < len(self.slots.records) and self._ask_feed():
                pass
            wanted = sum(ranks_of(r) for r in self.queue)
            for rec in self.slots.records[:wanted]:  # the others stay spare: a tuner's later trials may want them
                self._start_worker(rec)
            self._order_queue()
            stage = depths(self.queue, self.by_id)  # upstreams first (stable: the order above within a stage)
            self.queue = deque(sorted(self.queue, key=lambda r: stage[r.id]))
            while self.queue or self.pool.workers:  # (a run in flight has its worker in the pool)
                for w, event in self.pool.poll(0.5):
                    self._on_event(w, event)
                now = time.monotonic()
                in_flight = self.in_flight()
                if in_flight and now - last_watch > WATCH_EVERY_S:
                    self._watch_heartbeats()
                    last_watch = now
                if in_flight and now - last_ingest > INGEST_EVERY_S:
                    self._index(in_flight)
                    self.display.progress(self.store.runs(in_flight))
                    if self.feed:
                        self.feed.watch(in_flight)
                    last_ingest = now
        except KeyboardInterrupt:
            self.result.interrupted = True
            running = len(self.in_flight())
            self.display.message(f"stopping: {running} running run(s) end at their next batch; "
                                 "finished runs are kept")
            self.pool.shutdown(self.stop_grace_s)
            self.result.cancelled += running
        finally:
            self.pool.shutdown(5.0)

    # ------------------------------------------------------------------ queue

    def _order_queue(self) -> None:
        """Longest expected run first; worth it only when runs wait for slots and differ."""
        if len(self.queue) <= len(self.slots.records) or len({r.cell for r in self.queue}) < 2:
            return
        from runner.launch.estimate import expected_seconds, longest_first

        runs = list(self.queue)
        self.queue = deque(longest_first(runs, expected_seconds(runs, self.store.history())))

    def _ask_feed(self) -> bool:
        """Queue the feed's next runs; False when it has none now (or the disk is full)."""
        runs = self.feed.more() if self.feed and not self.disk_full else []
        for run in runs:
            self.by_id[run.id] = run
            self.unsettled.add(run.id)
            self.queue.append(run)
        if runs:
            self.lock.announce(sorted(self.unsettled))
        return bool(runs)

    def _refill(self) -> None:
        """Once the launch is under way: the feed's next runs, and fresh workers on spare slots for them."""
        if self._ask_feed():
            self._wake_spare()

    def _next_run(self):
        """The next queued run that can start, skipping (and reporting) those cancelled while they
        waited and those whose upstream will not be done; runs waiting for an upstream stay queued."""
        if not self.queue:
            self._refill()
        settled = True
        while settled:  # a run settled in a pass may be the upstream a run parked earlier waits for
            settled, waiting, run = False, [], None
            while self.queue:
                candidate = self.queue.popleft()
                upstream = self._upstream(candidate)
                if self.folder(candidate.id).cancel_requested():
                    self._finished(candidate, State.CANCELLED, "cancelled before it started")
                elif upstream == "wait":
                    waiting.append(candidate)
                    continue
                elif upstream is not None:
                    self._finished(candidate, State.BLOCKED, upstream)
                else:
                    run = candidate
                    break
                settled = True
            self.queue.extendleft(reversed(waiting))
            if run is not None:
                return run
        return None

    def _upstream(self, run) -> str | None:
        """None when ``run`` may start; "wait" while its upstream is queued or running; else why it cannot."""
        up = getattr(run, "upstream", None)
        if up is None or self.folder(up).file("summary.json").exists():
            return None
        if up in self.unsettled:
            return "wait"
        label = self.by_id[up].label if up in self.by_id else up
        return f"not started: its upstream {label} is not done"

    def _assign(self) -> None:
        """Hand queued runs to idle workers: a distributed run once it has as many idle workers as ranks."""
        self._wake_spare()
        while idle := self.slots.in_phase(Phase.IDLE):
            run = self._next_run()
            if run is None:
                if not self.queue:  # nothing left for them: they exit
                    for rec in idle:
                        rec.worker.close_input()
                        self.slots.move(rec, Phase.CLOSING)
                return
            need = ranks_of(run)
            if need > len(idle):
                self.queue.appendleft(run)  # it keeps its place; slots that free up wait for it
                return
            first, *helpers = _pick(idle, need)
            first.worker.send(self.study.runs_dir / run.id, [
                {"gpu": h.slot.gpu, "device": "cuda:0" if h.slot.gpu is not None else "cpu", "threads": h.slot.threads}
                for h in helpers])
            self.slots.move(first, Phase.BUSY, run_id=run.id)
            for h in helpers:
                self.slots.move(h, Phase.LENT, run_id=run.id)
            self.display.started(run, first.slot)

    # ------------------------------------------------------------------ events

    def _on_event(self, w: Worker, event: dict) -> None:
        kind = event.get("event")
        if kind == "ready":
            w.started = True
            self.start_kills[w.slot.name] = 0
            self.slots.move(self.slots.of(w), Phase.IDLE)
            self._assign()
        elif kind == "finished":
            rid = event["run"]
            self.slots.move(self.slots.of(w), Phase.PENDING)  # it says ready again, or exits
            self._release(rid)
            state = State(event["state"])
            if state is State.INTERRUPTED:  # the worker's word for a run stopped by a full disk
                self._stop_starting(event.get("reason") or "no space left on device")
            self._finished(self.by_id[rid], state, event.get("reason"))
            self._assign()
        elif kind == "eof":
            self._worker_exited(w)

    def _worker_exited(self, w: Worker) -> None:
        """A worker's pipe closed: it exited after its last run, or died in the middle of one."""
        rec = self.slots.of(w)
        self.pool.retire(w)
        code = w.proc.wait()
        was, rid = rec.phase, rec.run_id
        # a lent slot gets a fresh worker once its run ends, not while a rank trains on it; any other
        # is spare: a fresh worker now if runs are queued, else once some are (a tuner's failed trial)
        self.slots.move(rec, Phase.VACATED if was is Phase.LENT else Phase.SPARE)
        if was is Phase.BUSY:
            self._died_during(self.by_id[rid], w, code)
            self._release(rid)
        if not w.started:
            self._start_failed(w, code)
        if not self.queue and was is not Phase.CLOSING:
            self._refill()  # a tuner replaces a failed trial
        self._assign()

    def _start_failed(self, w: Worker, code: int) -> None:
        """A worker died before it said ready. Killed by a signal (the OOM killer or a ``kill -9``
        while it imports torch) it is replaced like a lost worker, at most ``retries`` times in a row
        on its slot (its slot is spare: ``_assign`` starts a fresh one). One that exited by itself
        (an import error: the same every time) stops the launch with the end of its log."""
        log = "\n".join(_tail(w.log_path).strip().splitlines()[-8:]) or "(empty)"
        if code >= 0:
            raise WorkerStartError(f"a worker could not start (exit code {code}); the end of its log {w.log_path}:\n{log}")
        kills = self.start_kills[w.slot.name] = self.start_kills[w.slot.name] + 1
        if kills > self.retries:
            raise WorkerStartError(f"the worker on {w.slot.name} was killed {kills} time(s) in a row while starting "
                                   f"(signal {-code}, --retries {self.retries}): is memory short? "
                                   f"the end of its log {w.log_path}:\n{log}")
        self.display.message(f"the worker on {w.slot.name} was killed (signal {-code}) while starting; "
                             f"starting another ({kills}/{self.retries})")

    def _release(self, run_id: str) -> None:
        """A run ended: the slots lent to it take runs again (one whose worker died meanwhile waits
        for its end of file), and a vacated one is spare until there is work."""
        for rec in self.slots.serving(run_id):
            if rec.phase is Phase.VACATED:
                self.slots.move(rec, Phase.SPARE)
            else:
                self.slots.move(rec, Phase.IDLE if rec.worker.proc.poll() is None else Phase.PENDING)

    def _wake_spare(self) -> None:
        """Fresh workers on the spare slots once runs are queued (a retried run, a tuner's next trial)."""
        if self.queue:
            for rec in self.slots.in_phase(Phase.SPARE):
                self._start_worker(rec)

    def _died_during(self, run, w: Worker, code: int) -> None:
        """Mark the open attempt lost and put the run back at the front of the queue, or give up on it."""
        folder = self.folder(run.id)
        fs = folder.read()
        attempt = _this_attempt(fs, w)
        if fs.state == State.DONE or (attempt and attempt.get("status") is not None):  # it got that far before dying
            return self._finished(run, State(fs.state), fs.reason)
        tries = self.tries[run.id]
        tries.unsent += w.send_failed
        if w.send_failed and tries.unsent <= MAX_UNSENT:  # the run never reached it: no try spent
            self.queue.appendleft(run)
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if code == EXIT_RANK_LOST:
            how = f"exit code {code}: another rank of this distributed run was killed, see rank-N.log in its folder"
        if w.hung_for is not None:
            how = f"no heartbeat for {w.hung_for:.0f} s, killed"
        reason = f"worker process died ({how}); its log: {w.log_path}"
        if attempt is not None:
            try:
                folder.mark_lost(attempt["attempt"], reason)
            except OSError as e:  # a full disk: the folder reads lost all the same (its worker's pid is gone)
                if not no_space(e):
                    raise
                self._stop_starting(str(e))
        tries.lost += 1
        if tries.lost <= self.retries:
            self.result.retried += 1
            self.queue.appendleft(run)
            self._index([run.id])
            self.display.message(f"lost {run.label}: {reason}; retrying ({tries.lost}/{self.retries}), "
                                 "from its last checkpoint")
        else:
            self._finished(run, State.LOST, reason + f" (lost {tries.lost} time(s), --retries {self.retries})")

    def _finished(self, run, state: State, reason: str | None) -> None:
        self.unsettled.discard(run.id)
        self.lock.announce(sorted(self.unsettled))
        self._index([run.id])
        record = self.store.runs([run.id]).get(run.id)
        if state is State.DONE:
            self.result.done += 1
        elif state is State.FAILED:
            self.result.failed += 1
        elif state is State.LOST:
            self.result.lost += 1
        elif state is State.PRUNED:
            self.result.pruned += 1
        elif state in (State.BLOCKED, State.CORRUPT):
            self.result.blocked += 1
        else:
            self.result.cancelled += 1
        if state in (State.FAILED, State.LOST, State.BLOCKED, State.CORRUPT):
            self.result.failures.append((run.label, state, reason or "?"))
        self.display.finished(run, state, record, reason)
        if self.feed:
            self.feed.settled(run, state, reason)

    # ------------------------------------------------------------------ a full disk

    def _stop_starting(self, why: str) -> None:
        """The disk is full: no new run starts (each would fail the same way); runs in flight go on
        and stop by themselves if they need space. The queue is left to the next launch."""
        if self.disk_full is not None:
            return
        self.disk_full = why
        left = [r for r in self.queue]
        self.queue.clear()
        for run in left:
            self.unsettled.discard(run.id)
        self.lock.announce(sorted(self.unsettled))
        self.result.stopped_for = (f"{why}; no new run started ({len(left)} left for the next launch, which resumes "
                                   "the stopped ones from their checkpoints once there is space)")
        self.display.message(f"stopping: {why}; runs in flight go on, no new run starts")

    def _index(self, ids: list[str]) -> None:
        """Ingest these runs' folders; a store on a full disk is left behind (the folders are the
        journal: the next command that reads them catches up) and no new run starts."""
        try:
            self.store.ingest(self.study.runs_dir, ids)
        except StoreError as e:
            if "no space left" not in str(e):
                raise
            self._stop_starting(str(e))

    # ------------------------------------------------------------------ workers

    def _start_worker(self, rec: SlotRecord) -> None:
        self.slots.move(rec, Phase.PENDING, worker=self.pool.start(rec.slot, max_runs=1 if self.isolate else None))

    def _watch_heartbeats(self) -> None:
        """Kill the worker of any run whose heartbeat went stale while its process lives on (stopped,
        or stuck); the closed pipe then takes the path of a dead worker."""
        now = time.time()
        for rec in self.slots.in_phase(Phase.BUSY):
            rid, w = rec.run_id, rec.worker
            if w.hung_for is not None or w.proc.poll() is not None:
                continue
            fs = self.folder(rid).read(now=now)
            attempt = _this_attempt(fs, w)
            if attempt is not None and attempt.get("status") is not None:
                continue  # it just ended: its event is on the way
            beat = fs.heartbeat if attempt and fs.heartbeat and fs.heartbeat.get("attempt") == attempt["attempt"] else {}
            # before its attempt starts, the worker is counted from the moment it got the run
            silent = now - max(beat.get("time") or 0.0, (attempt or {}).get("started_at") or 0.0, w.sent_at)
            if silent > self.lost_after_s:
                w.hung_for = silent
                self.display.message(f"{self.by_id[rid].label}: no heartbeat for {silent:.0f} s "
                                     f"(RUNNER_LOST_AFTER_S={self.lost_after_s:g}); killing worker pid {w.proc.pid}")
                w.kill()


def ranks_of(run) -> int:
    """Slots a run takes: its recipe's ``gpus_per_run``."""
    return int(run.config["train"].get("gpus_per_run", 1))


def _pick(idle: list[SlotRecord], n: int) -> list[SlotRecord]:
    """``n`` of the idle slots for one run, on distinct GPUs where there are enough (``--per-gpu`` puts
    several slots on one GPU; ranks sharing a GPU fall back to gloo). The first trains it as rank 0."""
    chosen, gpus = [], set()
    for rec in idle:  # one slot per GPU first
        if len(chosen) < n and (rec.slot.gpu is None or rec.slot.gpu not in gpus):
            chosen.append(rec)
            gpus.add(rec.slot.gpu)
    return chosen + [rec for rec in idle if rec not in chosen][:n - len(chosen)]


def _this_attempt(fs, w: Worker) -> dict | None:
    """The attempt ``w`` opened for its current run, if it got that far (not one of an earlier launch)."""
    last = fs.attempts[-1] if fs.attempts else None
    return last if last and (last.get("started_at") or 0.0) >= w.sent_at else None


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
