"""Staged studies: a run whose recipe says ``init = "run:<selector>"`` starts from the selected
weights of another run of the study, its upstream.

The selector is a matrix name or ``KEY=VALUE`` pairs (axes and dotted keys, as ``--where``):
``"run:pretrain"``, ``"run:matrix=pretrain,architecture=vit"``. Of the runs it selects, the
upstream is the one that shares the downstream's architecture name, its architecture section
and its seed, each narrowing applied only where some candidate shares it (so one pretraining
run may feed every seed of a fine-tuning cell); anything but exactly one run is refused at
plan time, as are cycles.

Resolution rewrites the downstream's ``train.init`` to ``"run:<upstream run id>"``: the
upstream's id is part of the downstream's identity, so a changed upstream makes a new
downstream run. Its cell id takes the upstream's *cell* id instead, so the seeds of a
fine-tuning cell stay one cell. Retraining an upstream in place (``--rerun``) makes its
finished downstream runs stale: each records which upstream attempt it started from
(``init_run_finished_at`` in its summary) and ``effective_states`` (``runner/plan/diff.py``) compares.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from runner.errors import SelectionError, SpecError
from runner.plan.identity import ids
from runner.plan.runs import Run
from runner.study.selectors import axes_of, holds, selector_rule, unknown_key
from runner.study.spec import Study

PREFIX = "run:"


def resolve(study: Study, runs: dict[str, Run]) -> dict[str, Run]:
    """The runs with every ``run:<selector>`` init resolved to its upstream (ids recomputed)."""
    original = list(runs.values())
    for r in original:
        if r.config["train"].get("init") == "pretrained" and not r.config["architecture"]["model"].startswith("timm:"):
            raise SpecError(study.file, _origin(study, r), f"init: {r.label}: pretrained weights exist for timm:<model> "
                                                          "architectures only; use scratch or run:<selector>")
    pending = {r.id: r for r in original if _selector(r) is not None}
    if not pending:
        return runs
    done: dict[str, Run] = {r.id: r for r in original if r.id not in pending}
    visiting: list[str] = []

    selected: dict[str, tuple[list[Run], dict[str, list[Run]]]] = {}  # per selector: its runs, by architecture

    def candidates(run: Run) -> list[Run]:
        text = _selector(run)
        if text not in selected:
            found = matching(run, text)
            by_name: dict[str, list[Run]] = {}
            for r in found:
                by_name.setdefault(r.architecture, []).append(r)
            selected[text] = found, by_name
        found, by_name = selected[text]
        found = by_name.get(run.architecture) or found
        found = [r for r in found if r.config["architecture"] == run.config["architecture"]] or found
        return [r for r in found if r.seed == run.seed] or found

    def matching(run: Run, text: str) -> list[Run]:
        try:
            rule = selector_rule(text)
        except SelectionError as e:
            raise SpecError(study.file, _origin(study, run), f"init: {str(e).removeprefix('--where ')}") from None
        for key in rule:
            problem = unknown_key(original, key)
            if problem:
                raise SpecError(study.file, _origin(study, run), f'init: "run:{text}": {key}: {problem}')
        names = [m.name for m in study.matrices]
        for name in rule.get("matrix", []):
            if name not in names:
                raise SpecError(study.file, _origin(study, run), f'init: "run:{text}": no matrix named {name}; '
                                                                  f"defined: {', '.join(names)}")
        return [r for r in original if all(holds(axes_of(r), r.config, k, v) for k, v in rule.items())]

    def final(run: Run) -> Run:
        if run.id in done:
            return done[run.id]
        if run.id in visiting:
            loop = [pending[i].label for i in visiting[visiting.index(run.id):]] + [run.label]
            raise SpecError(study.file, _origin(study, run), f"init: cyclic dependency: {' -> '.join(loop)}; "
                                                              "a run cannot start from its own weights")
        visiting.append(run.id)
        found = candidates(run)
        where = _origin(study, run)
        if not found:
            raise SpecError(study.file, where, f'init: "{run.config["train"]["init"]}" selects no run of the study '
                                               f"(cell {run.label}); name a [[matrix]] or KEY=VALUE pairs that match runs")
        if len(found) > 1:
            labels = ", ".join(r.label for r in found[:3]) + (", ..." if len(found) > 3 else "")
            raise SpecError(study.file, where, f'init: "{run.config["train"]["init"]}" selects {len(found)} runs for '
                                               f"{run.label} ({labels}); narrow it, e.g. run:matrix=NAME,architecture=NAME")
        up = final(found[0])
        if up.config["architecture"]["model"] != run.config["architecture"]["model"]:
            raise SpecError(study.file, where, f"init: {run.label} is a {run.config['architecture']['model']} but its "
                                               f"upstream {up.label} a {up.config['architecture']['model']}; "
                                               "weights load only into the same architecture")
        visiting.pop()
        resolved = _rewired(run, up)
        done[run.id] = resolved
        return resolved

    for run in pending.values():
        final(run)
    out: dict[str, Run] = {}
    for run in original:
        r = done[run.id]
        if r.id in out:  # two selectors led to the same run
            old = out[r.id]
            r = replace(old, matrices=old.matrices + tuple(m for m in r.matrices if m not in old.matrices))
        out[r.id] = r
    return out


def _selector(run: Run) -> str | None:
    init = run.config["train"].get("init", "scratch")
    return init[len(PREFIX):] if init.startswith(PREFIX) and run.upstream is None else None


def _rewired(run: Run, up: Run) -> Run:
    config = {**run.config, "train": {**run.config["train"], "init": PREFIX + up.id}}
    rid, cell = ids(config, upstream_cell=up.cell)
    return replace(run, id=rid, cell=cell, config=config, upstream=up.id)


def _origin(study: Study, run: Run) -> str:
    """Where the run's init is written: the last block that sets it for this run."""
    where = "[defaults]"
    for m in study.matrices:
        if m.name in run.matrices and ("init" in m.set or "train.init" in m.set):
            where = f"[[matrix]] {m.name} set"
    for o in study.overrides:
        if "init" in o.set or "train.init" in o.set:
            where = f"[[override]] #{o.index} set"
    return where


# ---------------------------------------------------------------- order


def depths(runs: Iterable[Run], by_id: dict[str, Run]) -> dict[str, int]:
    """Stage of each run: 1 for a run that starts from scratch or pretrained weights, 1 + its upstream's."""
    out: dict[str, int] = {}

    def depth(run: Run) -> int:
        if run.id not in out:
            up = by_id.get(run.upstream) if run.upstream else None
            out[run.id] = 1 if up is None else depth(up) + 1
        return out[run.id]

    for r in runs:
        depth(r)
    return out


def with_upstreams(runs: list[Run], by_id: dict[str, Run]) -> list[Run]:
    """``runs`` plus every upstream they need that is not among them (upstreams first)."""
    have = {r.id for r in runs}
    added: list[Run] = []

    def need(run: Run) -> None:
        up = by_id.get(run.upstream) if run.upstream else None
        if up is not None and up.id not in have:
            have.add(up.id)
            need(up)
            added.append(up)

    for r in runs:
        need(r)
    return added + list(runs)


def stage_lines(runs: list[Run], by_id: dict[str, Run]) -> list[str]:
    """``runner plan``'s stage order: each stage's matrices and run counts, when the study has stages."""
    if not any(r.upstream for r in runs):
        return []
    runs = with_upstreams(runs, by_id)
    stage = depths(runs, by_id)
    upstreams = {r.upstream for r in runs if r.upstream}
    lines = []
    for n in sorted(set(stage.values())):  # stage 1: the runs others start from, not every independent run
        members = [r for r in runs if stage[r.id] == n and (n > 1 or r.id in upstreams)]
        names: dict[str, int] = {}
        for r in members:
            key = "/".join(r.matrices)
            names[key] = names.get(key, 0) + 1
        lines.append(f"stage {n}: " + ", ".join(f"{k} ({v} run{'s' if v > 1 else ''})" for k, v in names.items())
                     + ("" if n > 1 else "  (a stage starts when the runs it starts from are done)"))
    return lines
