"""The study file's selector syntax: which runs a ``match``, ``exclude`` or ``where`` table, a
``--where KEY=VALUE`` option or a ``run:<selector>`` init names.

A key is an axis (``architecture``, ``dataset``, ``seed``, ``matrix``: the study's names) or a
dotted config key (``architecture.depth``, ``train.lr``, ``lr``); a key left unset in a config
holds its schema's default. Numbers compare with a relative tolerance, booleans only with
booleans, and a run reached from several blocks is in each of their matrices.

One syntax everywhere (``wanted``): a list means any of its values, and so does ``"a,b"``, in a
block's table exactly as in ``--where architecture=a,b``. A selector that keeps nothing is a
mistake, never an empty result: ``no_match_reason`` says which value exists nowhere.

Everything here reads a run through its axes and its resolved config only (``axes_of``), so
the plan and the report's views of runs select alike; torch-free.
"""

from __future__ import annotations

import functools
import math
import tomllib
from typing import Any, Iterable

import architectures
import datasets

from runner.errors import SelectionError, SpecError, choices
from runner.study.messages import show_value
from runner.study.recipe import Recipe
from runner.study.spec import AXES, resolve_key

_MISSING = object()


def schema_of(section: str, body: dict[str, Any]):
    """The pydantic class that validates a section (by its model / source), or None if unknown."""
    if section == "architecture":
        fam = architectures.get_family(body.get("model", ""))
        return fam.hparams if fam else None
    if section == "dataset":
        src = datasets.get_source(body.get("source", ""))
        return src.options if src else None
    return Recipe


def equal(a: Any, b: Any) -> bool:
    """Whether a config value is the one a selector (or a schema default) names."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


# ---------------------------------------------------------------- matching


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


def wanted(key: str, want: Any) -> list[Any]:
    """The values a selector's entry accepts. A list is any of them (for a config key also the
    list itself, which a list-valued key like ``depths`` may hold); a string with commas is any
    of its parts, typed as TOML (``"0,1"`` for seeds), or the string itself."""
    if isinstance(want, list):
        return list(want) if key in AXES else [want, *want]
    if isinstance(want, str) and "," in want:
        return [want, *(_typed(p.strip()) for p in want.split(",") if p.strip())]
    return [want]


def holds(axes: dict[str, Any], sections: dict[str, dict], key: str, values: list[Any]) -> bool:
    """Whether the key has one of the values (``wanted``'s list)."""
    got = lookup(axes, sections, key)
    if key == "matrix":  # a run reached from several blocks is in each of them
        return any(w in got for w in values)
    return got is not _MISSING and any(equal(got, w) for w in values)


def matches(axes: dict[str, Any], sections: dict[str, dict], rule: dict[str, Any]) -> bool:
    """True when every key of a ``match``/``exclude``/``where`` table holds one of its ``wanted`` values."""
    return all(holds(axes, sections, key, wanted(key, want)) for key, want in rule.items())


# ---------------------------------------------------------------- runs


def axes_of(run) -> dict[str, Any]:
    """The run's place on the axes, as ``matches`` takes it (a ``runner.plan.runs.Run``, or
    anything with its ``architecture``, ``dataset``, ``seed`` and ``matrices``)."""
    return {"architecture": run.architecture, "dataset": run.dataset, "seed": run.seed, "matrix": run.matrices}


def value_of(run, key: str) -> Any:
    """An axis or dotted config key of a run (for table rows and columns)."""
    v = lookup(axes_of(run), run.config, key)
    if key == "matrix":
        return v[0]
    return None if v is _MISSING else v


def unknown_key(runs: Iterable, key: str) -> str | None:
    """Why no run has this dotted key (None when some run has it, or it is an axis). Resolved
    configs hold every key of their schema, defaults included, so a key none of them holds is a typo."""
    if key in AXES or key == "cell":
        return None
    section, name = resolve_key(key, "", "")
    known = {k for r in runs for k in r.config[section]}
    return None if name in known else f"no run has {section}.{name}; {section} keys: {choices(known)}"


_PLURAL = {"architecture": "architectures are", "dataset": "datasets are", "seed": "seeds are", "matrix": "matrices are"}


def present_values(runs: Iterable, key: str, limit: int = 12) -> str:
    """The distinct values the runs hold for a key, as the study writes them: ``vit, resnet18``."""
    seen: dict[str, None] = {}
    for r in runs:
        values = r.matrices if key == "matrix" else [value_of(r, key)]
        for v in values:
            seen.setdefault(v if key in AXES and isinstance(v, str) else show_value(v))
    shown = list(seen)
    more = f", … ({len(shown) - limit} more)" if len(shown) > limit else ""
    return (", ".join(str(v) for v in shown[:limit]) or "(none)") + more


def no_match_reason(rule: dict[str, Any], runs: list, values_of=wanted) -> str:
    """Why a selector keeps none of ``runs``: the first key whose values no run holds, with the
    values there are; else that no run holds them together. ``values_of(key, want)`` turns an
    entry into its accepted values (``--where`` parses its own)."""
    for key, want in rule.items():
        accepted = values_of(key, want)
        if not any(holds(axes_of(r), r.config, key, accepted) for r in runs):
            return f"{key} = {_shown(want)}; {_PLURAL.get(key, key + ' values are')} {present_values(runs, key)}"
    return "no cell has " + ", ".join(f"{k} = {_shown(v)}" for k, v in rule.items()) + " together"


def _shown(want: Any) -> str:
    if isinstance(want, list) and len(want) == 1:
        want = want[0]
    return show_value(want)


def differing_keys(a: dict, b: dict) -> list[str]:
    """The config keys on which two runs' configs differ, as a selector writes them."""
    out = []
    for section in ("architecture", "dataset", "train"):
        sa, sb = a.get(section, {}), b.get(section, {})
        out += [k if section == "train" else f"{section}.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    return out


# ---------------------------------------------------------------- written selectors


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


def selector_rule(text: str) -> dict[str, list[Any]]:
    """The selector of a ``run:<selector>`` init: ``"pretrain"`` -> {"matrix": ["pretrain"]};
    ``"matrix=a,dataset=b"`` -> a ``--where`` rule."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) == 1 and "=" not in items[0]:
        return {"matrix": [items[0]]}
    return parse_where(items)


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
