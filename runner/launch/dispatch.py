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
  others stay idle until it ends. While it gathers its N slots, slots that free up wait for it
  (it keeps its place at the head of the queue); the slots it does not need take other runs.
* **Feeds.** A launch knows its runs up front; a tuner (``runner/tune/tuner.py``) makes them as it
  goes: with a ``feed``, a slot that runs dry asks it for more, every settled run is handed
  to it, and it looks at the runs in flight every second (to prune them).
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Protocol

from runner.backends.local import Worker, WorkerPool
from runner.train.distributed import EXIT_RANK_LOST
from runner.errors import BackendError
from runner.records.runfolder import RunFolder
from runner.plan.stages import depths

WATCH_EVERY_S = 2.0  # how often in-flight heartbeats are looked at
INGEST_EVERY_S = 1.0
MAX_UNSENT = 3  # a run handed to workers that had just died this often spends its tries as a lost run


class Feed(Protocol):
    def more(self) -> list: ...  # runs for a free slot (none: nothing to add now)
    def settled(self, run, state: str, reason: str | None) -> None: ...
    def watch(self, in_flight: list[str]) -> None: ...


class Dispatcher:
    def __init__(self, study, todo, store, slots, display, result, lock, *, retries: int, isolate: bool,
                 lost_after_s: float, stop_grace_s: float, feed: Feed | None = None):
        self.study, self.store, self.slots, self.display, self.result = study, store, slots, display, result
        self.lock = lock  # publishes the runs not settled yet, for `runner status` and `runner cancel`
        self.unsettled = {r.id for r in todo}
        self.queue = deque(todo)
        self.by_id = {r.id: r for r in todo}
        self.retries, self.isolate, self.lost_after_s, self.stop_grace_s = retries, isolate, lost_after_s, stop_grace_s
        self.tries: dict[str, int] = {}  # lost attempts per run in this launch
        self.unsent: dict[str, int] = {}  # runs handed to a worker that had just died
        self.in_flight: dict[str, Worker] = {}
        self.idle: list[Worker] = []  # ready, waiting for a run they can take
        self.lent: dict[str, list[Worker]] = {}  # a distributed run's other slots, held while it runs
        self.vacated: dict[str, list] = {}  # lent slots whose worker died: their GPU still trains a rank
        self.spare: list = []  # slots without a worker, started again when there is work for them
        self.pool = WorkerPool(study_dir=study.dir, log_dir=study.runs_dir / ".workers")
        self.feed = feed

    def folder(self, run_id: str) -> RunFolder:
        return RunFolder(self.study.runs_dir / run_id)

    def run(self) -> None:
        last_ingest = last_watch = 0.0
        try:
            while self.feed and len(self.queue) < len(self.slots) and self._refill():
                pass
            wanted = sum(ranks_of(r) for r in self.queue)
            for slot in self.slots[:wanted]:
                self._start_worker(slot)
            self.spare = list(self.slots[wanted:])  # a tuner's later trials may want them
            self._order_queue()
            stage = depths(self.queue, self.by_id)  # upstreams first (stable: the order above within a stage)
            self.queue = deque(sorted(self.queue, key=lambda r: stage[r.id]))
            while self.queue or self.in_flight or self.pool.workers:
                for w, event in self.pool.poll(0.5):
                    self._on_event(w, event)
                now = time.monotonic()
                if self.in_flight and now - last_watch > WATCH_EVERY_S:
                    self._watch_heartbeats()
                    last_watch = now
                if self.in_flight and now - last_ingest > INGEST_EVERY_S:
                    self.store.ingest(self.study.runs_dir, list(self.in_flight))
                    self.display.progress(self.store.runs(list(self.in_flight)))
                    if self.feed:
                        self.feed.watch(list(self.in_flight))
                    last_ingest = now
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.display.message(f"stopping: {len(self.in_flight)} running run(s) end at their next batch; "
                                 "finished runs are kept")
            self.pool.shutdown(self.stop_grace_s)
            self.result.cancelled += len(self.in_flight)
        finally:
            self.pool.shutdown(5.0)

    # ------------------------------------------------------------------ queue

    def _order_queue(self) -> None:
        """Longest expected run first; worth it only when runs wait for slots and differ."""
        if len(self.queue) <= len(self.slots) or len({r.cell for r in self.queue}) < 2:
            return
        from runner.launch.estimate import expected_seconds, longest_first

        runs = list(self.queue)
        self.queue = deque(longest_first(runs, expected_seconds(runs, self.store.history())))

    def _refill(self) -> bool:
        """Ask the feed for more runs; False when it has none now."""
        runs = self.feed.more() if self.feed else []
        for run in runs:
            self.by_id[run.id] = run
            self.unsettled.add(run.id)
            self.queue.append(run)
        if runs:
            self.lock.announce(sorted(self.unsettled))
            self._wake_spare()
        return bool(runs)

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
                    self._finished(candidate, "cancelled", "cancelled before it started")
                elif upstream == "wait":
                    waiting.append(candidate)
                    continue
                elif upstream is not None:
                    self._finished(candidate, "blocked", upstream)
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
        while self.idle:
            run = self._next_run()
            if run is None:
                if not self.queue:  # nothing left for them: they exit
                    for w in self.idle:
                        w.close_input()
                    self.idle.clear()
                return
            need = ranks_of(run)
            if need > len(self.idle):
                self.queue.appendleft(run)  # it keeps its place; slots that free up wait for it
                return
            w, helpers = self._take_idle(need)
            w.send(self.study.runs_dir / run.id, [{"gpu": h.slot.gpu, "device": "cuda:0" if h.slot.gpu is not None
                                                   else "cpu", "threads": h.slot.threads} for h in helpers])
            if helpers:
                self.lent[run.id] = helpers
            self.in_flight[run.id] = w
            self.display.started(run, w.slot)

    def _take_idle(self, n: int) -> tuple[Worker, list[Worker]]:
        """``n`` idle workers for one run, on distinct GPUs where there are enough (``--per-gpu`` puts
        several slots on one GPU; ranks sharing a GPU fall back to gloo)."""
        chosen, gpus = [], set()
        for w in self.idle:  # one slot per GPU first
            if len(chosen) < n and (w.slot.gpu is None or w.slot.gpu not in gpus):
                chosen.append(w)
                gpus.add(w.slot.gpu)
        chosen += [w for w in self.idle if w not in chosen][:n - len(chosen)]
        for w in chosen:
            self.idle.remove(w)
        return chosen[0], chosen[1:]

    # ------------------------------------------------------------------ events

    def _on_event(self, w: Worker, event: dict) -> None:
        kind = event.get("event")
        if kind == "ready":
            w.started = True
            self.idle.append(w)
            self._assign()
        elif kind == "finished":
            rid = event["run"]
            self.in_flight.pop(rid, None)
            self._release(rid)
            w.run_id = None
            self._finished(self.by_id[rid], event["state"], event.get("reason"))
            self._assign()
        elif kind == "eof":
            self._worker_exited(w)

    def _worker_exited(self, w: Worker) -> None:
        """A worker's pipe closed: it exited after its last run, or died in the middle of one."""
        self.pool.retire(w)
        code = w.proc.wait()
        rid = w.run_id
        if w in self.idle:
            self.idle.remove(w)
        lent_to = next((r for r, helpers in self.lent.items() if w in helpers), None)
        if lent_to is not None:  # its slot gets a fresh worker once that run ends, not while a rank trains on it
            self.lent[lent_to].remove(w)
            self.vacated.setdefault(lent_to, []).append(w.slot)
        if rid is not None and self.in_flight.pop(rid, None) is not None:
            self._died_during(self.by_id[rid], w, code)
            self._release(rid)
        if not w.started:
            raise BackendError(f"a worker could not start (exit code {code}); its log {w.log_path} ends with: "
                               f"{_tail(w.log_path).strip().splitlines()[-1:] or ['(empty)']}")
        if not self.queue and not w.closing:
            self._refill()  # a tuner replaces a failed trial
        if lent_to is None:  # (told to exit too: a tuner may queue runs again, a failed trial's)
            self.spare.append(w.slot)  # a fresh worker now if runs are queued, else once some are
        self._assign()

    def _release(self, run_id: str) -> None:
        """A distributed run ended: its lent slots take runs again (a worker that died meanwhile
        is dealt with when its end of file comes); a vacated slot is spare until there is work."""
        self.idle.extend(w for w in self.lent.pop(run_id, []) if w.proc.poll() is None)
        self.spare.extend(self.vacated.pop(run_id, []))

    def _wake_spare(self) -> None:
        """Fresh workers on the spare slots once runs are queued (a retried run, a tuner's next trial)."""
        if self.queue:
            for slot in self.spare:
                self._start_worker(slot)
            self.spare.clear()

    def _died_during(self, run, w: Worker, code: int) -> None:
        """Mark the open attempt lost and put the run back at the front of the queue, or give up on it."""
        folder = self.folder(run.id)
        fs = folder.read()
        attempt = _this_attempt(fs, w)
        if fs.state == "done" or (attempt and attempt.get("status") is not None):  # it got that far before dying
            return self._finished(run, fs.state, fs.reason)
        self.unsent[run.id] = self.unsent.get(run.id, 0) + w.send_failed
        if w.send_failed and self.unsent[run.id] <= MAX_UNSENT:  # the run never reached it: no try spent
            self.queue.appendleft(run)
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if code == EXIT_RANK_LOST:
            how = f"exit code {code}: another rank of this distributed run was killed, see rank-N.log in its folder"
        if w.hung_for is not None:
            how = f"no heartbeat for {w.hung_for:.0f} s, killed"
        reason = f"worker process died ({how}); its log: {w.log_path}"
        if attempt is not None:
            folder.mark_lost(attempt["attempt"], reason)
        self.tries[run.id] = self.tries.get(run.id, 0) + 1
        if self.tries[run.id] <= self.retries:
            self.result.retried += 1
            self.queue.appendleft(run)
            self.store.ingest(self.study.runs_dir, [run.id])
            self.display.message(f"lost {run.label}: {reason}; retrying ({self.tries[run.id]}/{self.retries}), "
                                 "from its last checkpoint")
        else:
            self._finished(run, "lost", reason + f" (lost {self.tries[run.id]} time(s), --retries {self.retries})")

    def _finished(self, run, state: str, reason: str | None) -> None:
        self.unsettled.discard(run.id)
        self.lock.announce(sorted(self.unsettled))
        self.store.ingest(self.study.runs_dir, [run.id])
        record = self.store.runs([run.id]).get(run.id)
        if state == "done":
            self.result.done += 1
        elif state in ("failed", "lost"):
            setattr(self.result, state, getattr(self.result, state) + 1)
            self.result.failures.append((run.label, state, reason or "?"))
        elif state == "pruned":
            self.result.pruned += 1
        elif state == "blocked":
            self.result.blocked += 1
            self.result.failures.append((run.label, state, reason or "?"))
        else:
            self.result.cancelled += 1
        self.display.finished(run, state, record, reason)
        if self.feed:
            self.feed.settled(run, state, reason)

    # ------------------------------------------------------------------ workers

    def _start_worker(self, slot) -> None:
        self.pool.start(slot, max_runs=1 if self.isolate else None)

    def _watch_heartbeats(self) -> None:
        """Kill the worker of any run whose heartbeat went stale while its process lives on (stopped,
        or stuck); the closed pipe then takes the path of a dead worker."""
        now = time.time()
        for rid, w in list(self.in_flight.items()):
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
