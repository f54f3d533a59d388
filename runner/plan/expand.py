"""Expansion of a Study into runs, their ids, selection by ``--where``, and the diff against the store.

A run's resolved config is ``{architecture, dataset, train, seed}``. Its id is a
short sha256 of the canonical JSON of that config, so anything that changes what
is trained makes a new run and nothing else does: names of tables and blocks are
labels, not identity, and ``dataset.root`` (where the data lies, not what it is)
is left out of the hash. The cell id is the same hash without the seed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from typing import Any, Iterable

import architectures
import datasets

from runner.plan import stages
from runner.errors import SelectionError, SpecError, choices
from runner.study.recipe import Recipe, is_identity
from runner.study.messages import pydantic_problem, show_value
from runner.study.spec import AXES, Study, data_root, resolve_key

ID_LENGTH = 12
NOT_IDENTITY = {("dataset", "root")}
STATES = ("done", "stale", "running", "queued", "failed", "lost", "cancelled", "pruned", "unknown", "missing")


@dataclass(frozen=True)
class Run:
    id: str
    cell: str
    label: str
    architecture: str  # the study's name for it, e.g. "vit"
    dataset: str
    seed: int
    matrices: tuple[str, ...]
    config: dict[str, Any]
    upstream: str | None = None  # the run whose weights it starts from (init = "run:..."), runner/plan/stages.py


@dataclass(frozen=True)
class Plan:
    study: Study
    runs: tuple[Run, ...]

    def by_id(self) -> dict[str, Run]:
        return {r.id: r for r in self.runs}


# ---------------------------------------------------------------- ids


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def identity_section(section: str, body: dict[str, Any]) -> dict[str, Any]:
    """The keys of one resolved section that define what is trained: not ``NOT_IDENTITY``, not
    engine fields (speed switches, see ``runner.study.recipe``), and not those at their schema default,
    so a new option whose default keeps the old behaviour leaves every id as it was
    (``tests/test_identity.py`` pins the defaults for that reason)."""
    schema = schema_of(section, body)
    fields = schema.model_fields if schema is not None else {}
    out = {}
    for key, value in body.items():
        if (section, key) in NOT_IDENTITY:
            continue
        field = fields.get(key)
        if field is not None and not is_identity(field):
            continue
        if field is not None and not field.is_required() and _equal(value, field.get_default(call_default_factory=True)):
            continue
        out[key] = value
    return out


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines what is trained."""
    return {k: (identity_section(k, v) if isinstance(v, dict) else v) for k, v in config.items()}


def run_id(config: dict[str, Any]) -> str:
    return short_hash(canonical_json(identity(config)))


def cell_id(config: dict[str, Any]) -> str:
    return short_hash(canonical_json({k: v for k, v in identity(config).items() if k != "seed"}))


# ---------------------------------------------------------------- values and matching


def schema_of(section: str, body: dict[str, Any]):
    """The pydantic class that validates a section (by its model / source), or None if unknown."""
    if section == "architecture":
        fam = architectures.get_family(body.get("model", ""))
        return fam.hparams if fam else None
    if section == "dataset":
        src = datasets.get_source(body.get("source", ""))
        return src.options if src else None
    return Recipe


_MISSING = object()


@functools.lru_cache(maxsize=1024)
def _section_and_name(key: str) -> tuple[str, str | None]:
    """``resolve_key`` for keys already validated: matching a rule against 10,000 runs asks it
    for the same few keys every time."""
    return resolve_key(key, "", "")


def lookup(axes: dict[str, Any], sections: dict[str, dict], key: str) -> Any:
    """Value of an axis or dotted key for a cell; defaults of the schema fill unset keys."""
    if key in AXES:
        return axes[key]
    section, name = _section_and_name(key)
    body = sections[section]
    if name in body:
        return body[name]
    schema = schema_of(section, body)
    if schema is not None and name in schema.model_fields:
        return schema.model_fields[name].default
    return _MISSING


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def _holds(axes: dict[str, Any], sections: dict[str, dict], key: str, wanted: list[Any]) -> bool:
    got = lookup(axes, sections, key)
    if key == "matrix":  # a run reached from several blocks is in each of them
        return any(w in got for w in wanted)
    return got is not _MISSING and any(_equal(got, w) for w in wanted)


def matches(axes: dict[str, Any], sections: dict[str, dict], rule: dict[str, Any]) -> bool:
    """True when every key of a ``match``/``exclude``/``where`` table holds; for axes a list
    means any of its values (config values may themselves be lists, so not for them)."""
    return all(
        _holds(axes, sections, key, want if (key in AXES and isinstance(want, list)) else [want])
        for key, want in rule.items()
    )


# ---------------------------------------------------------------- expansion


class _Resolver:
    """Validates each distinct section once and keeps its canonical JSON: configs repeat across
    seeds, datasets and grid points, so a 10,000-run plan validates a few dozen sections."""

    def __init__(self, study: Study):
        self.study = study
        self.sections: dict[Any, tuple[Any, dict, str]] = {}
        self.checked: set[tuple[int, int]] = set()

    def resolve(self, sections: dict[str, dict], origin: dict[tuple[str, str], str], label: str):
        """-> (resolved sections, canonical JSON of each section's identity part)."""
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
        return {"architecture": arch, "dataset": data, "train": train}, (arch_json, data_json, train_json)

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
            hit = self.sections[key] = (obj, resolved, canonical_json(identity_section(section, resolved)))
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
    """Every run the study declares, in file order, each reached once."""
    resolver = _Resolver(study)
    runs: dict[str, Run] = {}
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
                if any(matches(axes, sections, rule) for rule in m.exclude):
                    continue
                cell_sections, cell_origin = sections, origin
                for o in study.overrides:
                    if matches(axes, cell_sections, o.match):
                        if cell_sections is sections:  # copy on the first override that applies
                            cell_sections, cell_origin = {k: dict(v) for k, v in sections.items()}, dict(origin)
                        _apply(cell_sections, cell_origin, o.set, f"[[override]] #{o.index} set", study)
                label = "/".join(p for p in (a, d, tag, f"s{seed}") if p)
                resolved, (aj, dj, tj) = resolver.resolve(cell_sections, cell_origin, label)
                config = {**resolved, "seed": seed}
                # the canonical JSON of identity(config), assembled from the cached section JSONs
                rid = short_hash(f'{{"architecture":{aj},"dataset":{dj},"seed":{seed},"train":{tj}}}')
                if rid in runs:
                    old = runs[rid]
                    if m.name not in old.matrices:
                        runs[rid] = Run(**{**old.__dict__, "matrices": old.matrices + (m.name,)})
                    continue
                cid = short_hash(f'{{"architecture":{aj},"dataset":{dj},"train":{tj}}}')
                runs[rid] = Run(rid, cid, label, a, d, seed, (m.name,), config)
    return Plan(study, tuple(stages.resolve(study, runs).values()))


def derive(study: Study, base: Run, assignments: dict[str, Any], *, label: str, where: str,
           seed: int | None = None) -> Run:
    """A run of ``base``'s cell with ``assignments`` (dotted keys, as in ``set``) applied and
    checked like any cell's: a tuning trial. Its ids follow from its config, as every run's do,
    so a trial that repeats a configuration already trained is that same run."""
    sections = {k: dict(v) for k, v in base.config.items() if isinstance(v, dict)}
    origin: dict[tuple[str, str], str] = {}
    _apply(sections, origin, assignments, where, study)
    resolved, (aj, dj, tj) = _Resolver(study).resolve(sections, origin, label)
    seed = base.seed if seed is None else seed
    rid = short_hash(f'{{"architecture":{aj},"dataset":{dj},"seed":{seed},"train":{tj}}}')
    cid = short_hash(f'{{"architecture":{aj},"dataset":{dj},"train":{tj}}}')
    return Run(rid, cid, label, base.architecture, base.dataset, seed, (), {**resolved, "seed": seed}, base.upstream)


# ---------------------------------------------------------------- selection


def parse_where(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["architecture=vit,san", "architecture.depth=6"]`` -> {key: [values]}; values typed as TOML."""
    rule: dict[str, list[Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not eq or not key or not text:
            raise SelectionError(f"--where {item}: expected KEY=VALUE, e.g. --where architecture=vit")
        try:
            resolve_key(key, "--where", "")
        except SpecError as e:
            raise SelectionError(f"--where {item}: {e.detail}") from None
        rule.setdefault(key, []).extend(_typed(v) for v in _split(text))
    return rule


def _split(text: str) -> list[str]:
    try:
        tomllib.loads(f"v = {text}")
        return [text]
    except tomllib.TOMLDecodeError:
        return [t.strip() for t in text.split(",") if t.strip()]


def _typed(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def select(plan: Plan, *, matrix: Iterable[str] = (), where: dict[str, list[Any]] | None = None) -> list[Run]:
    """The runs of the named matrices (all if none) that satisfy every ``where`` key."""
    names = {m.name for m in plan.study.matrices}
    wanted = set(matrix)
    for n in wanted - names:
        raise SelectionError(f"--matrix {n}: no such matrix in {plan.study.file}; defined: {choices(names)}")
    rule = where or {}
    _check_keys(plan, rule)
    out = []
    for run in plan.runs:
        if wanted and not wanted.intersection(run.matrices):
            continue
        if all(_holds(axes_of(run), run.config, key, values) for key, values in rule.items()):
            out.append(run)
    return out


def axes_of(run: Run) -> dict[str, Any]:
    """The run's place on the axes, as ``matches`` takes it."""
    return {"architecture": run.architecture, "dataset": run.dataset, "seed": run.seed, "matrix": run.matrices}


def _check_keys(plan: Plan, rule: dict[str, list[Any]]) -> None:
    """A dotted key that no run has is a typo, not an empty selection."""
    for key in rule:
        problem = unknown_key(plan.runs, key)
        if problem:
            raise SelectionError(f"--where {key}: {problem}")


def unknown_key(runs: Iterable[Run], key: str) -> str | None:
    """Why no run has this dotted key (None when some run has it, or it is an axis). Resolved
    configs hold every key of their schema, defaults included, so a key none of them holds is a typo."""
    if key in AXES or key == "cell":
        return None
    section, name = resolve_key(key, "", "")
    known = {k for r in runs for k in r.config[section]}
    return None if name in known else f"no run has {section}.{name}; {section} keys: {choices(known)}"


def value_of(run: Run, key: str) -> Any:
    """An axis or dotted config key of a run (for table rows and columns)."""
    v = lookup(axes_of(run), run.config, key)
    if key == "matrix":
        return v[0]
    return None if v is _MISSING else v


# ---------------------------------------------------------------- diff against the store


def state_of(record, commit: str | None) -> str:
    """The plan's view of a run given its store record: ``stale`` is done at another git commit."""
    if record is None or record.state == "planned":
        return "missing"
    if record.state == "done" and commit and record.git_commit and record.git_commit != commit:
        return "stale"
    return record.state


def count_states(states: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return {k: v for k, v in counts.items() if v}
