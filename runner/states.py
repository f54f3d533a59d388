"""The states a run can be in, and the sets of them that decisions rely on, defined once.

A ``State`` is a ``StrEnum``: it is stored and printed as the plain strings the store, the run
folders and ``--json`` output have always held (``State.DONE == "done"``), so old databases and
folders read the same. Three layers speak of states:

* a **run folder** (``runner/records/runfolder.py``) says what happened: planned, running, done,
  failed, lost, cancelled, pruned, or corrupt (a file of it cannot be parsed);
* the **plan** adds what the study thinks of it: missing (no record), stale (done with other
  code than now), and for SLURM tasks unknown (the cluster has no record of them);
* a **launch** adds queued (waiting for a slot) and blocked (its upstream is not done).

An attempt's own end status (``attempts.jsonl``) also uses ``interrupted`` (a signal or Ctrl-C
stopped it; it resumes from its checkpoint), which the folder reports as ``cancelled``.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    PLANNED = "planned"  # a folder that no attempt has started yet
    MISSING = "missing"  # no folder, or one never started: the plan's word for "to do"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    STALE = "stale"  # done, but with other training code than now
    FAILED = "failed"
    LOST = "lost"  # its worker died or hung without saying why
    CANCELLED = "cancelled"  # by `runner cancel`, or interrupted by a signal
    INTERRUPTED = "interrupted"  # an attempt's end status only (see the module docstring)
    PRUNED = "pruned"  # a tuning trial stopped early by the pruner
    BLOCKED = "blocked"  # not started: its upstream is not done
    UNKNOWN = "unknown"  # a SLURM task the cluster has no record of
    CORRUPT = "corrupt"  # a results file of its folder cannot be parsed: never retrained without --rerun corrupt


# the order counts are shown in (plan, status)
SHOWN = (State.DONE, State.STALE, State.RUNNING, State.QUEUED, State.FAILED, State.LOST, State.CANCELLED,
         State.PRUNED, State.UNKNOWN, State.CORRUPT, State.MISSING)
FINISHED = frozenset({State.DONE, State.STALE})  # has a summary (stale: done with other code)
INCOMPLETE = frozenset({State.MISSING, State.QUEUED, State.LOST, State.CANCELLED})  # a launch always (re)runs these
RERUNNABLE = frozenset({State.FAILED, State.STALE, State.CORRUPT})  # a launch reruns these only with --rerun
SETTLED = frozenset({State.DONE, State.FAILED, State.LOST, State.PRUNED})  # a tuner's trial will not change
TROUBLE = frozenset({State.FAILED, State.LOST, State.CANCELLED, State.UNKNOWN, State.CORRUPT})  # status lists them with a reason
