"""Expansion of a Study into runs: the cartesian product of each ``[[matrix]]`` block, its
``set``, ``grid`` and ``exclude``, then the ``[[override]]`` blocks in order, each cell's sections
validated against their schemas and every run reached once; and ``derive`` (a tuning trial).

Ids come from ``runner/plan/identity.py``; ``run:<selector>`` inits are resolved by
``runner/plan/stages.py`` once every run is known.
"""

from __future__ import annotations

import itertools
from typing import Any

import architectures
import datasets

from runner.errors import SpecError, choices
from runner.plan import stages
from runner.plan.check import check_plan
from runner.plan.identity import canonical_json, ids, part_json
from runner.plan.runs import Plan, Run
from runner.study.messages import pydantic_problem, show_value
from runner.study.selectors import matches, schema_of
from runner.study.spec import Study, data_root, resolve_key


class _Resolver:
    """Validates each distinct section once and keeps its canonical JSON: configs repeat across
    seeds, datasets and grid points, so a 10,000-run plan validates a few dozen sections."""

    def __init__(self, study: Study):
        self.study = study
        self.sections: dict[Any, tuple[Any, dict, str]] = {}
        self.checked: set[tuple[int, int]] = set()

    def resolve(self, sections: dict[str, dict], origin: dict[tuple[str, str], str], label: str):
        """-> (resolved sections, each one's ``part_json``, for ``ids``)."""
        (hp, arch, arch_json), (opts, data, data_json), (_, train, train_json) = (
            self._cached(sections, origin, name, head, label)
            for name, head in (("architecture", "model"), ("dataset", "source"), ("train", None)))
        pair = (id(hp), id(opts))
        if pair not in self.checked:
            info = opts.info()
            problem = hp.check(img_size=info.img_size, in_chans=info.in_chans, num_classes=info.num_classes)
            if problem:
                name, message = problem
                self._fail(origin, "architecture", name, f"{message} for dataset {data['source']}", label)
            self.checked.add(pair)
        return ({"architecture": arch, "dataset": data, "train": train},
                {"architecture": arch_json, "dataset": data_json, "train": train_json})

    def _cached(self, sections, origin, section, head, label):
        body = sections[section]
        try:
            key = (section, tuple(sorted(body.items())))
            hash(key)
        except TypeError:  # a list or table value: fall back to its JSON
            key = (section, canonical_json(body))
        hit = self.sections.get(key)
        if hit is None:
            obj, resolved = self._section(body, origin, section, head, label)
            hit = self.sections[key] = (obj, resolved, part_json(section, resolved))
        return hit

    def _fail(self, origin, section, name, message, label):
        where = origin.get((section, name), "")
        raise SpecError(self.study.file, where, f"{name}: {message} (cell {label})")

    def _section(self, body, origin, section, head, label):
        schema = schema_of(section, body)
        if schema is None:
            kind = "architecture" if section == "architecture" else "dataset"
            known = architectures.list_models() if section == "architecture" else datasets.list_sources()
            self._fail(origin, section, head, f'unknown {kind} "{body.get(head)}"; choices: {choices(known)}', label)
        params = {k: v for k, v in body.items() if k != head}
        check_model = getattr(schema, "check_model", None)  # timm keywords set by set/grid/override
        problem = check_model(body[head], params) if check_model else None
        if problem:
            self._fail(origin, section, problem[0], problem[1], label)
        try:
            obj = schema.model_validate(params)
        except Exception as e:  # pydantic.ValidationError
            name, message = pydantic_problem(e.errors()[0], schema)
            self._fail(origin, section, name, message, label)
        resolved = ({head: body[head]} if head else {}) | obj.model_dump()
        if section == "dataset" and resolved.get("root"):
            resolved["root"] = data_root(self.study, resolved["root"])
        return obj, resolved


def _apply(sections, origin, assignments: dict[str, Any], where: str, study: Study) -> None:
    for key, value in assignments.items():
        section, name = resolve_key(key, study.file, where, axes=False)
        sections[section][name] = value
        origin[(section, name)] = where


def expand(study: Study) -> Plan:
    """Every run the study declares, in file order, each reached once; a selector of the study
    that selects nothing is refused (``runner/plan/check.py``)."""
    resolver = _Resolver(study)
    runs: dict[str, Run] = {}
    overrides_used: set[int] = set()
    excludes_used: set[tuple[str, int]] = set()
    for m in study.matrices:
        grid_keys = list(m.grid)
        for a, d, combo in itertools.product(m.architectures, m.datasets, itertools.product(*m.grid.values())):
            arch, dset = study.architectures[a], study.datasets[d]
            sections = {"architecture": {"model": arch.model, **arch.params},
                        "dataset": {"source": dset.source, **dset.options}, "train": dict(study.defaults)}
            origin = {("architecture", k): f"[architectures.{a}]" for k in sections["architecture"]}
            origin |= {("dataset", k): f"[datasets.{d}]" for k in sections["dataset"]}
            origin |= {("train", k): "[defaults]" for k in sections["train"]}
            _apply(sections, origin, m.set, f"[[matrix]] {m.name} set", study)
            _apply(sections, origin, dict(zip(grid_keys, combo)), f"[[matrix]] {m.name} grid", study)
            tag = ",".join(f"{k.rsplit('.', 1)[-1]}={show_value(v).strip(chr(34))}" for k, v in zip(grid_keys, combo))
            for seed in m.seeds:
                axes = {"architecture": a, "dataset": d, "seed": seed, "matrix": (m.name,)}
                excluded = [(m.name, j) for j, rule in enumerate(m.exclude, 1) if matches(axes, sections, rule)]
                if excluded:
                    excludes_used.update(excluded)
                    continue
                cell_sections, cell_origin = sections, origin
                for o in study.overrides:
                    if matches(axes, cell_sections, o.match):
                        overrides_used.add(o.index)
                        if cell_sections is sections:  # copy on the first override that applies
                            cell_sections, cell_origin = {k: dict(v) for k, v in sections.items()}, dict(origin)
                        _apply(cell_sections, cell_origin, o.set, f"[[override]] #{o.index} set", study)
                label = "/".join(p for p in (a, d, tag, f"s{seed}") if p)
                resolved, parts = resolver.resolve(cell_sections, cell_origin, label)
                config = {**resolved, "seed": seed}
                rid, cid = ids(config, parts=parts)
                if rid in runs:
                    old = runs[rid]
                    if m.name not in old.matrices:
                        runs[rid] = Run(**{**old.__dict__, "matrices": old.matrices + (m.name,)})
                    continue
                runs[rid] = Run(rid, cid, label, a, d, seed, (m.name,), config, origins=cell_origin)
    plan = Plan(study, tuple(stages.resolve(study, runs).values()))
    check_plan(plan, overrides_used, excludes_used)
    return plan


def derive(study: Study, base: Run, assignments: dict[str, Any], *, label: str, where: str,
           seed: int | None = None) -> Run:
    """A run of ``base``'s cell with ``assignments`` (dotted keys, as in ``set``) applied and
    checked like any cell's: a tuning trial. Its ids follow from its config, as every run's do,
    so a trial that repeats a configuration already trained is that same run."""
    sections = {k: dict(v) for k, v in base.config.items() if isinstance(v, dict)}
    origin: dict[tuple[str, str], str] = {}
    _apply(sections, origin, assignments, where, study)
    resolved, parts = _Resolver(study).resolve(sections, origin, label)
    seed = base.seed if seed is None else seed
    config = {**resolved, "seed": seed}
    rid, cid = ids(config, parts=parts)
    return Run(rid, cid, label, base.architecture, base.dataset, seed, (), config, base.upstream)
