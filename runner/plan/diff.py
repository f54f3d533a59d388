"""The plan against the store: the state each run is in, as the study sees it.

A store record says what happened to a run; the plan adds ``missing`` (no record, or one never
started) and ``stale``: done with other training code than is installed now (its code fingerprint,
``runner/records/fingerprint.py``, differs), or from an upstream that is not done or trained again
since (``runner/plan/stages.py``). A run recorded before fingerprints existed falls back to the
old rule, stale when done at another git commit than HEAD, and its reason says so.
"""

from __future__ import annotations

from typing import Any, Iterable

from runner.plan.runs import Run
from runner.plan.stages import depths, with_upstreams
from runner.states import FINISHED, SHOWN, State


def state_of(record, commit: str | None, code: str | None = None) -> str:
    """The plan's view of a run given its store record, HEAD's ``commit`` and the ``code``
    fingerprint installed now: ``stale`` is done with another fingerprint (or, recorded without
    one, at another commit)."""
    if record is None or record.state == State.PLANNED:
        return State.MISSING
    if record.state == State.DONE:
        recorded = getattr(record, "code_hash", None)
        if recorded is not None and code is not None:
            return State.STALE if recorded != code else State.DONE
        if commit and record.git_commit and record.git_commit != commit:
            return State.STALE
    return record.state


def stale_reason(record, commit: str | None, code: str | None) -> str:
    """Why ``state_of`` calls a done run stale, in the words ``plan`` and ``status`` show."""
    if getattr(record, "code_hash", None) is not None and code is not None:
        return f"trained with other code (fingerprint {record.code_hash}, now {code})"
    return (f"recorded before code fingerprints, so judged by its git commit: done at {(record.git_commit or '')[:12]}, "
            f"HEAD is {(commit or '')[:12]}")


def count_states(states: Iterable[str]) -> dict[str, int]:
    """Runs per state, in the order ``runner plan`` and ``runner status`` show them (states with no run left out)."""
    counts = dict.fromkeys(SHOWN, 0)
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return {k: v for k, v in counts.items() if v}


def effective_states(runs: Iterable[Run], records: dict[str, Any], commit: str | None,
                     by_id: dict[str, Run], code: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(state, why stale) of ``runs`` and their upstreams, staleness carried downstream: a finished
    run whose upstream is stale, is not done, or finished again after the run started from it, is
    stale, and the reason says which upstream (more telling than another commit)."""
    everything = with_upstreams(list(runs), by_id)
    states = {r.id: state_of(records.get(r.id), commit, code) for r in everything}
    why = {i: stale_reason(records[i], commit, code) for i, s in states.items() if s == State.STALE}
    if not any(r.upstream for r in everything):  # no stages: nothing is carried downstream
        return states, why
    stage = depths(everything, by_id)
    for run in sorted(everything, key=lambda r: stage[r.id]):
        if not run.upstream or states[run.id] not in FINISHED or run.upstream not in states:
            continue
        up, up_rec, rec = by_id[run.upstream], records.get(run.upstream), records.get(run.id)
        started_from = (rec.summary or {}).get("init_run_finished_at")
        if states[run.upstream] != State.DONE:
            states[run.id], why[run.id] = State.STALE, f"its upstream {up.label} is {states[run.upstream]}"
        elif up_rec is not None and started_from is not None and up_rec.finished_at is not None \
                and abs(up_rec.finished_at - started_from) > 1e-3:
            states[run.id], why[run.id] = State.STALE, f"its upstream {up.label} trained again after it started from it"
    return states, why
