"""The dispatcher's scheduling logic (``runner/launch/dispatch.py``, ``runner/launch/slots.py``).

The worker processes here are FAKES, on purpose: in-process objects with the interface of
``runner.backends.local``'s ``WorkerPool`` and ``Worker`` (start, retire, poll, shutdown; send,
close_input, kill, proc, the liveness attributes) that follow a script instead of training. These
are unit tests of scheduling (which slot takes which run and when, what a lost, hung or failed
worker costs, what waits for what), so they run in milliseconds and can stage what real processes
make hard to time (a lent worker dying before or after its run ends). The dispatcher, the run
folders (the fakes write attempts, heartbeats and summaries with ``RunFolder``) and the launch
result are real; the store, display and lock only record what they are told. Real worker
processes are driven end to end by ``test_fault_tolerance.py``, ``test_scheduler.py`` and
``test_distributed.py``.

Time is counted in ticks: one ``poll`` of the fake pool is one tick, and a scripted run ends (or
dies) a given number of ticks after it was handed over.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from runner.backends.local import Slot
from runner.errors import WorkerStartError
from runner.launch import dispatch
from runner.launch.dispatch import MAX_UNSENT, Dispatcher
from runner.launch.scheduler import LaunchResult
from runner.launch.slots import Phase, SlotTable
from runner.plan.runs import Run
from runner.records.runfolder import RunFolder
from runner.states import State

MAX_TICKS = 20_000  # a dispatcher that never ends fails the test instead of hanging it


# ---------------------------------------------------------------------- the fakes


@dataclass
class Act:
    """What a fake worker does with a run it is handed: ends it as ``kind`` (done, failed,
    cancelled) after ``ticks``, dies after ``ticks`` (killed), stops beating (hangs), or had died
    before the run reached it (gone). ``then(pool, worker)`` runs at the hand-over."""

    kind: str = "done"
    ticks: int = 2
    then: Callable | None = None


class FakeProc:
    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        return self.returncode

    def wait(self):
        assert self.returncode is not None, "the dispatcher waited for a live process"
        return self.returncode


class FakeWorker:
    """A worker process as the dispatcher sees it (``runner.backends.local.Worker``)."""

    def __init__(self, pool: FakePool, slot: Slot, number: int, max_runs: int | None):
        self.pool, self.slot, self.number, self.max_runs = pool, slot, number, max_runs
        self.started, self.hung_for, self.sent_at, self.send_failed = False, None, 0.0, False
        self.log_path = pool.log_dir / f"worker-{slot.name}-{number}.log"
        self.proc = FakeProc(10_000 + number)
        self.started_tick, self.runs = pool.tick, 0
        self.beating: tuple[RunFolder, int] | None = None  # the attempt whose heartbeat it rewrites (FakePool.poll)

    def send(self, run_dir: Path, helpers: list[dict] | None = None) -> None:
        self.sent_at = time.time()
        folder = RunFolder(run_dir)
        self.pool.sent.append(SimpleNamespace(run=folder.path.name, worker=self, helpers=helpers, tick=self.pool.tick))
        if self.proc.returncode is not None:
            self.send_failed = True
            return
        act = self.pool.next_act(folder.path.name)
        if act.then:
            act.then(self.pool, self)
        if act.kind == "gone":
            self.send_failed = True
            self.pool.exit(self, -9)
            return
        attempt = folder.start_attempt({})
        if act.kind == "hangs":
            return
        self.beating = (folder, attempt)
        if act.kind == "killed":
            self.pool.at(act.ticks, self, lambda: self.pool.exit(self, -9))
        else:
            self.pool.at(act.ticks, self, lambda: self._end(folder, attempt, act.kind))

    def _end(self, folder: RunFolder, attempt: int, state: str) -> None:
        self.beating = None
        reason = None
        if state == "done":
            folder.finish(attempt, {"test_acc": 0.5})
        elif state == "failed":
            reason = "boom"
            folder.fail(attempt, reason, "")
        else:
            reason = "cancelled with `runner cancel`; it resumes from its checkpoint"
            folder.end_attempt(attempt, "cancelled", reason)
        self.pool.emit(self, {"event": "finished", "run": folder.path.name, "state": state, "reason": reason})
        self.runs += 1
        if state == "failed" or self.runs == self.max_runs:
            self.pool.exit(self, 0)
        else:
            self.pool.emit(self, {"event": "ready", "pid": self.proc.pid})

    def close_input(self) -> None:
        self.pool.exit(self, 0)

    def kill(self) -> None:
        self.pool.exit(self, -9)


class FakePool:
    """``runner.backends.local.WorkerPool`` in one process: each ``poll`` is a tick."""

    def __init__(self, tmp_path: Path, script: dict[str, list[Act]], *, tick_s: float = 0.0,
                 broken: tuple[str, ...] = (), interrupt_at: int | None = None,
                 killed_starting: dict[str, int] | None = None):
        """``broken``: slots whose workers exit with code 1 before ready (an import error);
        ``killed_starting``: per slot, how many of its next workers are killed (-9) before ready."""
        self.log_dir = tmp_path / "logs"
        self.killed_starting = dict(killed_starting or {})
        self.script = {rid: list(acts) for rid, acts in script.items()}
        self.tick_s, self.broken, self.interrupt_at = tick_s, broken, interrupt_at
        self.workers: list[FakeWorker] = []  # started, not retired: the dispatcher reads this
        self.every: list[FakeWorker] = []  # every worker ever started
        self.sent: list[SimpleNamespace] = []
        self.shutdowns: list[float] = []
        self.tick = 0
        self._due: list[tuple[int, int, FakeWorker, Callable]] = []
        self._order = itertools.count()
        self._out: list[tuple[FakeWorker, dict]] = []

    def next_act(self, run_id: str) -> Act:
        acts = self.script.get(run_id)
        return acts.pop(0) if acts else Act()

    def start(self, slot: Slot, max_runs: int | None = None) -> FakeWorker:
        w = FakeWorker(self, slot, len(self.every) + 1, max_runs)
        self.workers.append(w)
        self.every.append(w)
        if slot.name in self.broken:
            self.at(1, w, lambda: self.exit(w, 1))
        elif self.killed_starting.get(slot.name, 0) > 0:
            self.killed_starting[slot.name] -= 1
            self.at(1, w, lambda: self.exit(w, -9))
        else:
            self.at(1, w, lambda: self.emit(w, {"event": "ready", "pid": w.proc.pid}))
        return w

    def retire(self, w: FakeWorker) -> None:
        self.workers.remove(w)

    def poll(self, timeout: float) -> list[tuple[FakeWorker, dict]]:
        self.tick += 1
        assert self.tick < MAX_TICKS, "the dispatcher never finished"
        if self.tick == self.interrupt_at:
            raise KeyboardInterrupt
        if self.tick_s:  # ticks that take real time: heartbeats matter (and cost an fsync each)
            time.sleep(self.tick_s)
            for w in self.workers:
                if w.beating and w.proc.returncode is None:
                    w.beating[0].heartbeat(w.beating[1])
        self._out = []
        while due := [d for d in self._due if d[0] <= self.tick]:
            first = min(due)
            self._due.remove(first)
            first[3]()
        return self._out

    def shutdown(self, grace_s: float) -> None:
        self.shutdowns.append(grace_s)
        for w in self.workers:
            if w.proc.returncode is None:
                w.proc.returncode = -15

    # what the fake workers do, ``delay`` ticks from now

    def at(self, delay: int, w: FakeWorker, fn: Callable) -> None:
        self._due.append((self.tick + delay, next(self._order), w, fn))

    def emit(self, w: FakeWorker, event: dict) -> None:
        self._out.append((w, event))

    def exit(self, w: FakeWorker, code: int, *, eof_after: int = 0) -> None:
        """The process ends now (nothing it had planned happens); its pipe closes ``eof_after`` ticks later."""
        if w.proc.returncode is not None:
            return
        w.proc.returncode, w.beating = code, None
        self._due = [d for d in self._due if d[2] is not w]
        self.at(eof_after, w, lambda: self.emit(w, {"event": "eof"}))


class Display:
    def __init__(self, pool: FakePool):
        self.pool = pool
        self.starts: list[tuple[str, str, int]] = []  # (label, slot name, tick)
        self.ends: list[tuple[str, State, str | None, int]] = []  # (label, state, reason, tick)
        self.messages: list[str] = []

    def started(self, run, slot) -> None:
        self.starts.append((run.label, slot.name, self.pool.tick))

    def finished(self, run, state, record, reason) -> None:
        self.ends.append((run.label, state, reason, self.pool.tick))

    def progress(self, records) -> None:
        pass

    def message(self, text: str) -> None:
        self.messages.append(text)


class Store:
    def __init__(self, history: list[dict]):
        self._history = history

    def ingest(self, runs_dir, ids=None) -> None:
        pass

    def runs(self, ids) -> dict:
        return {}

    def history(self) -> list[dict]:
        return self._history


class Lock:
    def __init__(self):
        self.announced: list[list[str]] = []

    def announce(self, ids) -> None:
        self.announced.append(list(ids))


class Feed:
    """A tuner-like feed: each batch of runs is handed out once ``after`` runs have settled."""

    def __init__(self, runs_dir: Path, batches: list[tuple[int, list[Run]]]):
        self.runs_dir, self.batches = runs_dir, list(batches)
        self.settled_runs: list[tuple[str, State]] = []
        self.watched: list[list[str]] = []

    def more(self) -> list[Run]:
        if not self.batches or self.batches[0][0] > len(self.settled_runs):
            return []
        runs = self.batches.pop(0)[1]
        for r in runs:
            RunFolder(self.runs_dir / r.id).create({"id": r.id, "label": r.label})
        return runs

    def settled(self, run, state, reason) -> None:
        self.settled_runs.append((run.label, state))

    def watch(self, in_flight: list[str]) -> None:
        self.watched.append(list(in_flight))


# ---------------------------------------------------------------------- helpers


def run_(label: str, *, cell: str = "cell", ranks: int = 1, upstream: str | None = None) -> Run:
    train = {"epochs": 1} | ({"gpus_per_run": ranks} if ranks > 1 else {})
    return Run(f"run-{label}", cell, label, "arch", "data", 0, ("main",),
               {"architecture": {"model": "m"}, "dataset": {"source": "s"}, "train": train}, upstream)


def cpu(n: int) -> list[Slot]:
    return [Slot(f"cpu{i}", "cpu", None, 1) for i in range(n)]


def launch(tmp_path: Path, runs: list[Run], slots: list[Slot], *, script: dict[str, list[Act]] | None = None,
           retries: int = 2, isolate: bool = False, lost_after_s: float = 600.0, feed_batches=None,
           history: list[dict] | None = None, **pool_options) -> SimpleNamespace:
    """Run a dispatcher over ``runs`` to its end; what it did, as the fakes saw it."""
    study = SimpleNamespace(dir=tmp_path, runs_dir=tmp_path / "runs")
    for r in runs:
        RunFolder(study.runs_dir / r.id).create({"id": r.id, "label": r.label})
    pool = FakePool(tmp_path, {f"run-{label}": acts for label, acts in (script or {}).items()}, **pool_options)
    display, result, lock = Display(pool), LaunchResult(), Lock()
    feed = Feed(study.runs_dir, feed_batches) if feed_batches is not None else None
    d = Dispatcher(study, runs, Store(history or []), slots, display, result, lock, retries=retries, isolate=isolate,
                   lost_after_s=lost_after_s, stop_grace_s=7.0, feed=feed, pool=pool)
    out = SimpleNamespace(dispatcher=d, pool=pool, display=display, result=result, lock=lock, feed=feed,
                          runs_dir=study.runs_dir)
    d.run()
    return out


def statuses(l: SimpleNamespace, label: str) -> list[str | None]:
    return [a.get("status") for a in RunFolder(l.runs_dir / f"run-{label}").read().attempts]


def sends(l: SimpleNamespace) -> list[tuple[str, str]]:
    """(run label, slot name) of every hand-over, in order."""
    return [(s.run.removeprefix("run-"), s.worker.slot.name) for s in l.pool.sent]


def ended_at(l: SimpleNamespace, label: str) -> int:
    return next(tick for lab, _, _, tick in l.display.ends if lab == label)


def sent_at(l: SimpleNamespace, label: str) -> int:
    return next(s.tick for s in l.pool.sent if s.run == f"run-{label}")


def assert_wound_down(l: SimpleNamespace) -> None:
    """Every slot ends spare, every worker retired, nothing left unsettled."""
    assert [r.phase for r in l.dispatcher.slots.records] == [Phase.SPARE] * len(l.dispatcher.slots.records)
    assert l.pool.workers == [] and l.lock.announced[-1] == []


# ---------------------------------------------------------------------- the slot table


def test_the_slot_table_refuses_a_transition_it_does_not_have():
    table = SlotTable(cpu(1))
    (rec,) = table.records
    with pytest.raises(AssertionError, match="SPARE -> BUSY"):
        table.move(rec, Phase.BUSY, run_id="r")
    worker = object()
    table.move(rec, Phase.PENDING, worker=worker)
    table.move(rec, Phase.IDLE)
    with pytest.raises(AssertionError, match="run_id=None"):
        table.move(rec, Phase.BUSY)  # a busy slot names its run
    table.move(rec, Phase.LENT, run_id="r")
    table.move(rec, Phase.VACATED)
    assert rec.worker is None and rec.run_id == "r" and table.serving("r") == [rec]
    table.move(rec, Phase.SPARE)
    assert rec.run_id is None and table.in_phase(Phase.SPARE) == [rec]


# ---------------------------------------------------------------------- order and workers


def test_the_longest_expected_run_goes_first_when_runs_wait_for_slots(tmp_path):
    runs = [run_("short", cell="c1"), run_("long", cell="c2"), run_("mid", cell="c3")]
    config = runs[0].config
    history = [{"cell": c, "config": config, "summary": {"flops": 1.0, "epochs": 1, "n_train": 1}, "seconds": s}
               for c, s in (("c1", 10.0), ("c2", 300.0), ("c3", 60.0))]
    l = launch(tmp_path, runs, cpu(1), history=history)
    assert [label for label, _ in sends(l)] == ["long", "mid", "short"]
    assert l.result.done == 3
    assert_wound_down(l)


@pytest.mark.parametrize("isolate", [False, True])
def test_one_worker_takes_run_after_run_unless_each_is_isolated(tmp_path, isolate):
    l = launch(tmp_path, [run_("a"), run_("b"), run_("c")], cpu(1), isolate=isolate)
    assert l.result.done == 3
    workers = [s.worker.number for s in l.pool.sent]
    assert workers == ([1, 2, 3] if isolate else [1, 1, 1])
    assert all(w.max_runs == (1 if isolate else None) for w in l.pool.every)
    assert_wound_down(l)


def test_a_failed_runs_worker_is_replaced_by_a_fresh_one(tmp_path):
    l = launch(tmp_path, [run_("a"), run_("b")], cpu(1), script={"a": [Act("failed")]})
    assert [s.worker.number for s in l.pool.sent] == [1, 2]
    assert l.result.failed == 1 and l.result.done == 1 and l.result.retried == 0
    assert l.result.failures == [("a", State.FAILED, "boom")]
    assert statuses(l, "a") == ["failed"]
    assert_wound_down(l)


# ---------------------------------------------------------------------- lost workers


def test_a_killed_worker_is_lost_and_its_run_retried_first_on_a_fresh_worker(tmp_path):
    l = launch(tmp_path, [run_("a"), run_("b")], cpu(1), script={"a": [Act("killed")]})
    assert sends(l) == [("a", "cpu0"), ("a", "cpu0"), ("b", "cpu0")]  # back at the front of the queue
    assert [s.worker.number for s in l.pool.sent] == [1, 2, 2]
    assert statuses(l, "a") == ["lost", "done"]
    assert "killed by signal 9" in RunFolder(l.runs_dir / "run-a").read().attempts[0]["reason"]
    assert l.result.retried == 1 and l.result.done == 2 and l.result.lost == 0
    assert any("retrying (1/2), from its last checkpoint" in m for m in l.display.messages)
    assert_wound_down(l)


def test_a_run_whose_worker_keeps_dying_is_given_up_after_its_retries(tmp_path):
    l = launch(tmp_path, [run_("a"), run_("b")], cpu(1), retries=2, script={"a": [Act("killed")] * 3})
    assert statuses(l, "a") == ["lost", "lost", "lost"]
    assert l.result.retried == 2 and l.result.lost == 1 and l.result.done == 1
    ((label, state, reason),) = l.result.failures
    assert (label, state) == ("a", State.LOST)
    assert "killed by signal 9" in reason and reason.endswith("(lost 3 time(s), --retries 2)")
    assert_wound_down(l)


def test_a_hung_worker_is_killed_once_its_heartbeat_is_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "WATCH_EVERY_S", 0.0)
    l = launch(tmp_path, [run_("a")], cpu(1), script={"a": [Act("hangs"), Act("done", ticks=3)]},
               lost_after_s=0.2, tick_s=0.005)
    assert any("a: no heartbeat for" in m and "killing worker pid 10001" in m for m in l.display.messages)
    first, second = RunFolder(l.runs_dir / "run-a").read().attempts
    assert first["status"] == "lost" and "no heartbeat for" in first["reason"]
    assert second["status"] == "done" and l.result.retried == 1 and l.result.done == 1
    assert_wound_down(l)


def test_a_run_handed_to_a_worker_that_had_just_died_spends_no_try(tmp_path):
    l = launch(tmp_path, [run_("a")], cpu(1), retries=0, script={"a": [Act("gone"), Act("done")]})
    assert l.result.done == 1 and l.result.retried == 0 and statuses(l, "a") == ["done"]
    assert_wound_down(l)


def test_a_run_that_never_reaches_a_live_worker_ends_lost(tmp_path):
    l = launch(tmp_path, [run_("a")], cpu(1), retries=0, script={"a": [Act("gone")] * (MAX_UNSENT + 1)})
    assert len(l.pool.sent) == MAX_UNSENT + 1 and l.result.lost == 1 and l.result.retried == 0
    assert_wound_down(l)


def test_a_worker_that_cannot_start_stops_the_launch_with_exit_1(tmp_path):
    with pytest.raises(WorkerStartError, match=r"a worker could not start \(exit code 1\)") as e:
        launch(tmp_path, [run_("a")], cpu(1), broken=("cpu0",))
    assert e.value.exit_code == 1  # not bad input


def test_a_worker_killed_while_starting_is_replaced_and_the_queue_goes_on(tmp_path):
    l = launch(tmp_path, [run_("a"), run_("b"), run_("c")], cpu(2), retries=2, killed_starting={"cpu0": 2})
    assert l.result.done == 3 and l.result.lost == 0
    assert [w.slot.name for w in l.pool.every].count("cpu0") >= 3  # two killed, then one that worked
    assert sum("killed (signal 9) while starting; starting another" in m for m in l.display.messages) == 2
    assert_wound_down(l)


def test_a_slot_whose_workers_are_killed_more_often_than_retries_stops_the_launch(tmp_path):
    with pytest.raises(WorkerStartError, match=r"the worker on cpu0 was killed 3 time\(s\) in a row while starting"):
        launch(tmp_path, [run_("a")], cpu(1), retries=2, killed_starting={"cpu0": 3})


def test_ctrl_c_counts_the_running_runs_cancelled_and_stops_the_workers(tmp_path):
    l = launch(tmp_path, [run_("a"), run_("b"), run_("c")], cpu(2),
               script={"a": [Act(ticks=50)], "b": [Act(ticks=50)]}, interrupt_at=5)
    assert l.result.interrupted and l.result.cancelled == 2 and l.result.done == 0
    assert l.pool.shutdowns == [7.0, 5.0]
    assert any(m.startswith("stopping: 2 running run(s)") for m in l.display.messages)


# ---------------------------------------------------------------------- multi-slot runs


def test_a_wide_run_borrows_slots_on_distinct_gpus_while_single_runs_keep_flowing(tmp_path):
    slots = [Slot("gpu0.0", "cuda", "0", 1), Slot("gpu0.1", "cuda", "0", 1), Slot("gpu1.0", "cuda", "1", 1)]
    runs = [run_("s1"), run_("wide", ranks=2), run_("s2"), run_("s3")]
    l = launch(tmp_path, runs, slots, script={"s1": [Act(ticks=4)], "wide": [Act(ticks=20)]})
    assert sends(l) == [("s1", "gpu0.0"), ("wide", "gpu0.1"), ("s2", "gpu0.0"), ("s3", "gpu0.0")]
    (wide,) = [s for s in l.pool.sent if s.run == "run-wide"]
    assert wide.helpers == [{"gpu": "1", "device": "cuda:0", "threads": 1}]  # the other GPU, not gpu0.0's twin
    assert sent_at(l, "s3") < ended_at(l, "wide")  # single runs flowed on the slot it did not need
    assert l.result.done == 4
    assert_wound_down(l)


def test_a_wide_run_keeps_the_head_of_the_queue_while_it_gathers_its_slots(tmp_path):
    runs = [run_("s1"), run_("wide", ranks=2), run_("s2")]
    l = launch(tmp_path, runs, cpu(2), script={"s1": [Act(ticks=6)]})
    assert [label for label, _ in sends(l)] == ["s1", "wide", "s2"]
    assert sent_at(l, "wide") >= ended_at(l, "s1")  # cpu1 waited for it, idle, rather than take s2
    assert sent_at(l, "s2") >= ended_at(l, "wide")
    assert_wound_down(l)


@pytest.mark.parametrize("eof_after", [1, 10], ids=["pipe-closes-while-lent", "pipe-closes-after-the-run"])
def test_a_lent_slot_whose_worker_dies_takes_no_run_until_the_wide_run_ends(tmp_path, eof_after):
    def kill_the_lent_worker(pool, rank0):
        (lent,) = [w for w in pool.workers if w is not rank0]
        pool.exit(lent, -9, eof_after=eof_after)

    runs = [run_("wide", ranks=2), run_("small")]
    l = launch(tmp_path, runs, cpu(2), script={"wide": [Act(ticks=6, then=kill_the_lent_worker)]})
    assert statuses(l, "wide") == ["done"] and l.result.retried == 0 and l.result.done == 2
    assert sent_at(l, "small") >= ended_at(l, "wide")
    assert all(s.worker.slot.name == "cpu0" for s in l.pool.sent)
    fresh = [w for w in l.pool.every if w.number > 2]
    assert all(w.slot.name == "cpu1" and w.started_tick >= ended_at(l, "wide") for w in fresh)
    assert_wound_down(l)


# ---------------------------------------------------------------------- cancel and stages


def test_a_cancelled_queued_run_is_skipped_and_a_cancelled_running_one_counted(tmp_path):
    (tmp_path / "runs" / "run-b").mkdir(parents=True)
    RunFolder(tmp_path / "runs" / "run-b").request_cancel({"by": "test"})
    l = launch(tmp_path, [run_("a"), run_("b"), run_("c")], cpu(1), script={"a": [Act("cancelled")]})
    assert [label for label, _ in sends(l)] == ["a", "c"]
    assert ("b", State.CANCELLED, "cancelled before it started") in [e[:3] for e in l.display.ends]
    assert l.result.cancelled == 2 and l.result.done == 1 and l.result.failures == []
    assert_wound_down(l)


def test_a_downstream_run_waits_for_its_upstream(tmp_path):
    up = run_("up")
    l = launch(tmp_path, [run_("down", upstream=up.id), up], cpu(2))
    assert [label for label, _ in sends(l)] == ["up", "down"]  # upstreams first, whatever the order given
    assert sent_at(l, "down") >= ended_at(l, "up")
    assert l.result.done == 2
    assert_wound_down(l)


def test_a_downstream_run_is_blocked_when_its_upstream_fails_or_is_not_in_the_launch(tmp_path):
    up = run_("up")
    runs = [up, run_("down", upstream=up.id), run_("orphan", upstream="run-elsewhere")]
    l = launch(tmp_path, runs, cpu(2), script={"up": [Act("failed")]})
    assert [label for label, _ in sends(l)] == ["up"]
    assert l.result.failed == 1 and l.result.blocked == 2
    assert sorted(l.result.failures) == [
        ("down", State.BLOCKED, "not started: its upstream up is not done"),
        ("orphan", State.BLOCKED, "not started: its upstream run-elsewhere is not done"),
        ("up", State.FAILED, "boom")]
    assert_wound_down(l)


# ---------------------------------------------------------------------- feeds


def test_a_feed_fills_the_slots_refills_a_slot_that_runs_dry_and_hears_every_settled_run(tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "INGEST_EVERY_S", 0.0)
    batches = [(0, [run_("t0")]), (0, [run_("t1")]), (1, [run_("t2")]), (3, [run_("t3")])]
    l = launch(tmp_path, [], cpu(2), feed_batches=batches, script={"t1": [Act("failed")]})
    assert [label for label, _ in sends(l)] == ["t0", "t1", "t2", "t3"]
    assert sorted(l.feed.settled_runs) == [("t0", State.DONE), ("t1", State.FAILED), ("t2", State.DONE),
                                           ("t3", State.DONE)]
    assert ["run-t0", "run-t1"] in l.feed.watched
    assert l.result.done == 3 and l.result.failed == 1
    assert_wound_down(l)


def test_spare_slots_wake_when_a_feed_adds_runs_later(tmp_path):
    batches = [(0, [run_("t0")]), (1, [run_("t1"), run_("t2")])]
    l = launch(tmp_path, [], cpu(2), feed_batches=batches, script={"t0": [Act("failed")]})
    # both slots had run dry (no worker) when t0's failure made the feed add two runs: both woke for them
    late = [w.slot.name for w in l.pool.every if w.started_tick >= ended_at(l, "t0")]
    assert late == ["cpu1", "cpu0"]  # the slot spare the longest first
    assert {slot for label, slot in sends(l) if label != "t0"} == {"cpu0", "cpu1"}
    assert sent_at(l, "t2") < ended_at(l, "t1")  # side by side
    assert_wound_down(l)
