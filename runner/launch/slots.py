"""The launcher's slots as a state machine: what each slot is doing, changed in one place.

A slot (a GPU, a share of one, or a CPU: ``runner.backends.local.Slot``) is in exactly one
``Phase`` at a time, and ``SlotTable.move`` is the only code that changes it: it refuses a
transition the diagram below does not have, so a bookkeeping slip fails loudly where it happens
instead of surfacing rounds later as a slot that trains two runs or none.

::

    SPARE ─start─▶ PENDING ─ready─▶ IDLE ─send─▶ BUSY ─finished─▶ PENDING (ready again, or it exits)
                                      ├─lend──▶ LENT ─run ends─▶ IDLE (PENDING if its worker died)
                                      │           └─worker exits─▶ VACATED ─run ends─▶ SPARE
                                      └─no work─▶ CLOSING
    PENDING, IDLE, BUSY, CLOSING ─worker exits─▶ SPARE (started again once runs are queued)

Each phase also fixes what the record holds: a worker in every phase but SPARE and VACATED, and
a run id in BUSY (the run it trains), LENT and VACATED (the run its GPU serves as another rank).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

from runner.backends.local import Slot, Worker


class Phase(Enum):
    SPARE = "spare"  # no worker; one is started when there is work for it
    PENDING = "pending"  # its worker is starting, or ending a run: it says ready next, or exits
    IDLE = "idle"  # its worker is ready and waits for a run
    BUSY = "busy"  # its worker trains a run (rank 0 of a distributed one)
    LENT = "lent"  # a distributed run's other rank trains on it; its own worker waits for that run to end
    VACATED = "vacated"  # lent, and its worker died: the rank still trains there until the run ends
    CLOSING = "closing"  # told there is no more work: its worker's exit is expected


LEGAL: dict[Phase, frozenset[Phase]] = {
    Phase.SPARE: frozenset({Phase.PENDING}),
    Phase.PENDING: frozenset({Phase.IDLE, Phase.SPARE}),
    Phase.IDLE: frozenset({Phase.BUSY, Phase.LENT, Phase.CLOSING, Phase.SPARE}),
    Phase.BUSY: frozenset({Phase.PENDING, Phase.SPARE}),
    Phase.LENT: frozenset({Phase.IDLE, Phase.PENDING, Phase.VACATED}),
    Phase.VACATED: frozenset({Phase.SPARE}),
    Phase.CLOSING: frozenset({Phase.SPARE}),
}
_NO_WORKER = {Phase.SPARE, Phase.VACATED}
_WITH_RUN = {Phase.BUSY, Phase.LENT}


@dataclass(eq=False)
class SlotRecord:
    slot: Slot
    phase: Phase = Phase.SPARE
    worker: Worker | None = None
    run_id: str | None = None
    since: int = 0  # when it entered its phase (a counter): slots of one phase are taken first come, first served


class SlotTable:
    """Every slot of a launch with its phase; ``move`` is the one place a phase changes."""

    def __init__(self, slots: list[Slot]):
        self._clock = itertools.count(1)
        self.records = [SlotRecord(s, since=next(self._clock)) for s in slots]
        self._by_worker: dict[Worker, SlotRecord] = {}

    def of(self, worker: Worker) -> SlotRecord:
        return self._by_worker[worker]

    def in_phase(self, phase: Phase) -> list[SlotRecord]:
        """The slots in ``phase``, in the order they entered it."""
        return sorted((r for r in self.records if r.phase is phase), key=lambda r: r.since)

    def serving(self, run_id: str) -> list[SlotRecord]:
        """The LENT and VACATED slots of a distributed run, in the order they were lent."""
        return sorted((r for r in self.records if r.phase in (Phase.LENT, Phase.VACATED) and r.run_id == run_id),
                      key=lambda r: r.since)

    def move(self, rec: SlotRecord, to: Phase, *, worker: Worker | None = None, run_id: str | None = None) -> None:
        """Put ``rec`` in phase ``to``: ``worker`` when it leaves SPARE, ``run_id`` when it becomes BUSY or LENT."""
        if to not in LEGAL[rec.phase]:
            raise AssertionError(f"slot {rec.slot.name}: no transition {rec.phase.name} -> {to.name}")
        if (worker is not None) != (rec.phase is Phase.SPARE) or (run_id is not None) != (to in _WITH_RUN):
            raise AssertionError(f"slot {rec.slot.name}: {rec.phase.name} -> {to.name} with worker={worker!r}, "
                                 f"run_id={run_id!r}")
        if worker is not None:
            rec.worker = worker
            self._by_worker[worker] = rec
        elif to in _NO_WORKER:
            self._by_worker.pop(rec.worker, None)
            rec.worker = None
        if to is not Phase.VACATED:  # a vacated slot still serves its run
            rec.run_id = run_id
        rec.phase, rec.since = to, next(self._clock)
