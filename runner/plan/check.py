"""Plan-time checks that every selector of the study selects something, once every run is known.

A ``[[override]]`` whose ``match`` names a renamed architecture, an ``exclude`` with a typo'd key,
a table's ``where`` or a probe's ``match`` that keeps no run: each would pass silently and leave a
paper wrong or empty, so each is a ``SpecError`` naming the block and the values that exist.
A table whose rows and columns leave a grid key out (so one table cell would average several
configurations) is refused here too, before anything trains, not when the report is drawn, and so
is a ``published`` number for a row or column the table never shows.

``expand`` calls ``check_plan`` with the overrides and exclude rules that applied to some cell
(it sees the cells before exclusion, this module only the runs after it).
"""

from __future__ import annotations

from typing import Any, Iterable

import architectures

from runner.errors import SpecError, choices
from runner.plan.runs import Plan, Run
from runner.study.messages import show_value
from runner.study.reports import METRIC, Table, display
from runner.study.selectors import axes_of, differing_keys, matches, no_match_reason, unknown_key, value_of


def check_plan(plan: Plan, overrides_used: set[int], excludes_used: set[tuple[str, int]]) -> None:
    study, runs = plan.study, plan.runs
    for o in study.overrides:
        if o.index not in overrides_used:
            refuse(plan, f"[[override]] #{o.index} match", o.match, runs, "matches no cell")
    for m in study.matrices:
        own = [r for r in runs if m.name in r.matrices]
        for j, rule in enumerate(m.exclude, 1):
            if (m.name, j) not in excludes_used:
                refuse(plan, f"[[matrix]] {m.name} exclude #{j}", rule, own, "excludes no cell")
    for t in study.tables:
        _check_table(plan, t, kept(plan, f"[[table]] {t.name} where", t.where))
    for f in study.figures:
        kept(plan, f"[[figure]] {f.name} where", f.where)
    for p in study.probes:
        probed = kept(plan, f"[[probe]] {p.name} match", p.match)
        if p.attention_only and not any(_has_attention(r) for r in probed):
            models = sorted({r.config["architecture"]["model"] for r in probed})
            raise SpecError(study.file, f"[[probe]] {p.name} match",
                            f"keeps only runs without an attention layer ({', '.join(models)}); "
                            f"a {p.kind} probe reads attention, so match a ViT, SAN, DAT or conv-attention architecture")
    for name, tune in study.tunes.items():
        kept(plan, f"[tune.{name}] match", tune.match)


def kept(plan: Plan, where: str, rule: dict[str, Any]) -> list[Run]:
    """The runs a block's selector keeps; none is an error (an empty selector keeps every run)."""
    runs = [r for r in plan.runs if matches(axes_of(r), r.config, rule)] if rule else list(plan.runs)
    if not runs:
        refuse(plan, where, rule, plan.runs, "matches no cell")
    return runs


def refuse(plan: Plan, where: str, rule: dict[str, Any], runs: Iterable[Run], verb: str) -> None:
    """Raise the one line that says why ``rule`` selects nothing: a key no run has, or the values."""
    for key in rule:
        problem = unknown_key(plan.runs, key)
        if problem:
            raise SpecError(plan.study.file, where, f"{key}: {problem}")
    raise SpecError(plan.study.file, where, f"{verb}: {no_match_reason(rule, list(runs))}")


def _check_table(plan: Plan, table: Table, runs: list[Run]) -> None:
    """One configuration per table cell: its seeds, never an average over a key left out."""
    for what, keys in (("rows", table.rows), ("columns", table.columns)):
        for key in keys:
            problem = key != METRIC and unknown_key(plan.runs, key)
            if problem:
                raise SpecError(plan.study.file, f"[[table]] {table.name}", f"{what}: {key}: {problem}")
    if table.published:
        _check_published(plan, table, runs)
    keys = [k for k in table.rows + table.columns if k != METRIC]
    places: dict[tuple, dict[str, Run]] = {}
    for run in runs:
        places.setdefault(tuple(repr(value_of(run, k)) for k in keys), {}).setdefault(run.cell, run)
    for cells in places.values():
        if len(cells) > 1:
            a, b, *_ = cells.values()
            differ = ", ".join(differing_keys(a.config, b.config)) or "their configs"
            shown = " / ".join(str(value_of(a, k)) for k in keys) or "(the only one)"
            labels = ", ".join(r.label.removesuffix(f"/s{r.seed}") for r in list(cells.values())[:3])
            raise SpecError(plan.study.file, f"[[table]] {table.name}",
                            f"rows and columns: the table cell {shown} holds {len(cells)} configurations ({labels}) "
                            f"that differ in {differ}; add that key to rows or columns, or narrow the table's where")


def _check_published(plan: Plan, table: Table, runs: list[Run]) -> None:
    """Each published number must sit in a cell of the table: a row or column it names that the
    table never shows would leave the paper's number out without a word."""

    def shown(run: Run, keys: tuple[str, ...]) -> set[str]:
        per_metric = [[m if k == METRIC else display(value_of(run, k)) for k in keys] for m in table.metrics]
        return {" / ".join(values) for values in per_metric}

    rows = sorted(set().union(*(shown(r, table.rows) for r in runs)))
    columns = sorted(set().union(*(shown(r, table.columns) for r in runs)))
    for row, col in table.published:
        for what, value, known in (("row", row, rows), ("column", col, columns)):
            if value not in known:
                raise SpecError(plan.study.file, f"[[table]] {table.name}",
                                f"published.{show_value(row)}{'' if what == 'row' else '.' + show_value(col)}: "
                                f"no such {what} in this table; its {what}s are {choices(known)}")


def _has_attention(run: Run) -> bool:
    family = architectures.get_family(run.config["architecture"]["model"])
    return family is None or family.attention is not False
