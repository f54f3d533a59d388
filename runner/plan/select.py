"""Selection of a plan's runs by ``--matrix`` and ``--where`` (the syntax: ``runner/study/selectors.py``)."""

from __future__ import annotations

from typing import Any, Iterable

from runner.errors import SelectionError, choices
from runner.plan.runs import Plan, Run
from runner.study.selectors import axes_of, holds, no_match_reason, unknown_key


def select(plan: Plan, *, matrix: Iterable[str] = (), where: dict[str, list[Any]] | None = None) -> list[Run]:
    """The runs of the named matrices (all if none) that satisfy every ``where`` key; a ``--where``
    that keeps none of them is refused with the values there are (never "0 runs selected")."""
    names = {m.name for m in plan.study.matrices}
    wanted = set(matrix)
    for n in wanted - names:
        raise SelectionError(f"--matrix {n}: no such matrix in {plan.study.file}; defined: {choices(names)}")
    rule = where or {}
    _check_keys(plan, rule)
    pool = [r for r in plan.runs if not wanted or wanted.intersection(r.matrices)]
    out = [r for r in pool if all(holds(axes_of(r), r.config, key, values) for key, values in rule.items())]
    if rule and not out:
        shown = " ".join(f"--where {k}={','.join(map(str, v))}" for k, v in rule.items())
        scope = f" in --matrix {','.join(sorted(wanted))}" if wanted else ""
        raise SelectionError(f"{shown}: selects no run{scope}: {no_match_reason(rule, pool, lambda k, v: v)}")
    return out


def _check_keys(plan: Plan, rule: dict[str, list[Any]]) -> None:
    """A dotted key that no run has is a typo, not an empty selection."""
    for key in rule:
        problem = unknown_key(plan.runs, key)
        if problem:
            raise SelectionError(f"--where {key}: {problem}")
