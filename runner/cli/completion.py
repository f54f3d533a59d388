"""Shell completion of the study's own names: matrices, tables, figures, probes, tune blocks,
datasets and ``--where`` keys, read from the study file the command line names (``-f``, else
``experiments.toml``).

The shell runs this on every Tab, so the file is read with ``tomllib`` alone: no validation, no
torch, a few milliseconds (only ``--where`` keys and ``--figure`` names import the spec's
constants, with pydantic). Completion must never fail or print: a missing or broken
file, or a block of the wrong shape, completes nothing (an error would land in the user's
command line), and ``runner plan`` says what is wrong with the file.
"""

from __future__ import annotations

import functools
import tomllib
from typing import Any, Callable

import typer


def _quiet(complete: Callable[[typer.Context, str], list[str]]) -> Callable[[typer.Context, str], list[str]]:
    """Whatever goes wrong while completing completes nothing."""

    @functools.wraps(complete)
    def guarded(ctx: typer.Context, incomplete: str) -> list[str]:
        try:
            return complete(ctx, incomplete)
        except Exception:  # noqa: BLE001 -- see the module docstring
            return []

    return guarded


def _study(ctx: typer.Context) -> dict[str, Any]:
    """The raw TOML of the study file this command line names (``-f``, or its default), ``{}`` if
    it cannot be read."""
    try:
        with open(ctx.params["file"], "rb") as f:
            return tomllib.load(f)
    except (KeyError, OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _named(raw: dict[str, Any], section: str) -> list[str]:
    """The ``name`` of each ``[[section]]`` block that has a string one."""
    blocks = raw.get(section)
    return [b["name"] for b in blocks if isinstance(b, dict) and isinstance(b.get("name"), str)] \
        if isinstance(blocks, list) else []


def _keys(raw: dict[str, Any], section: str) -> list[str]:
    """The names of ``[section.NAME]`` tables (architectures, datasets, tune blocks)."""
    body = raw.get(section)
    return [k for k, v in body.items() if isinstance(v, dict)] if isinstance(body, dict) else []


def _bodies(raw: dict[str, Any], section: str) -> list[dict[str, Any]]:
    body = raw.get(section)
    return [b for b in body.values() if isinstance(b, dict)] if isinstance(body, dict) else []


def _seeds(raw: dict[str, Any]) -> list[str]:
    """Every seed the study names, in [study] and in the [[matrix]] blocks."""
    lists = [(raw.get("study") or {}).get("seeds")] + [b.get("seeds") for b in raw.get("matrix") or ()
                                                        if isinstance(b, dict)]
    seen = dict.fromkeys(str(s) for seeds in lists if isinstance(seeds, list) for s in seeds if isinstance(s, int))
    return list(seen)


def _where_keys(raw: dict[str, Any]) -> list[str]:
    """The axes, then the dotted keys the file itself uses: recipe keys of [defaults], and
    ``architecture.KEY`` / ``dataset.KEY`` of the named architectures and datasets."""
    from runner.study.spec import AXES  # pydantic (a few tenths of a second), paid only on this Tab

    dotted = [k for k in raw.get("defaults") or {} if isinstance(k, str)]
    for section, prefix in (("architectures", "architecture"), ("datasets", "dataset")):
        dotted += [f"{prefix}.{k}" for body in _bodies(raw, section) for k in body]
    return list(AXES) + sorted(set(dotted) - set(AXES))


def _axis_values(raw: dict[str, Any], axis: str) -> list[str]:
    if axis == "architecture":
        return _keys(raw, "architectures")
    if axis == "dataset":
        return _keys(raw, "datasets")
    if axis == "seed":
        return _seeds(raw)
    if axis == "matrix":
        return _named(raw, "matrix")
    return []


@_quiet
def complete_matrix(ctx: typer.Context, incomplete: str) -> list[str]:
    """``--matrix NAME``: the [[matrix]] blocks."""
    return [n for n in _named(_study(ctx), "matrix") if n.startswith(incomplete)]


@_quiet
def complete_where(ctx: typer.Context, incomplete: str) -> list[str]:
    """``--where KEY=VALUE``: ``KEY=`` first; after an axis's ``=``, its values (also after a
    comma: ``architecture=vit,c`` completes the second name)."""
    raw = _study(ctx)
    key, eq, value = incomplete.partition("=")
    if not eq:
        return [f"{k}=" for k in _where_keys(raw) if k.startswith(incomplete)]
    done, _, last = value.rpartition(",")
    head = f"{key}={done}," if done else f"{key}="
    return [head + v for v in _axis_values(raw, key) if v.startswith(last)]


@_quiet
def complete_table(ctx: typer.Context, incomplete: str) -> list[str]:
    """``report --table NAME``: the [[table]] blocks, then the tune_NAME and probe_NAME tables."""
    raw = _study(ctx)
    names = (_named(raw, "table") + [f"tune_{n}" for n in _keys(raw, "tune")]
             + [f"probe_{n}" for n in _named(raw, "probe")])
    return [n for n in names if n.startswith(incomplete)]


@_quiet
def complete_figure(ctx: typer.Context, incomplete: str) -> list[str]:
    """``report --figure NAME``: the built-in figures, then the declared [[figure]] blocks."""
    from runner.study.reports import BUILTIN_FIGURES  # pydantic, paid only on this Tab

    names = dict.fromkeys([f.name for f in BUILTIN_FIGURES] + _named(_study(ctx), "figure"))
    return [n for n in names if n.startswith(incomplete)]


@_quiet
def complete_probe(ctx: typer.Context, incomplete: str) -> list[str]:
    """``probe NAME...``: the [[probe]] blocks."""
    return [n for n in _named(_study(ctx), "probe") if n.startswith(incomplete)]


@_quiet
def complete_tune(ctx: typer.Context, incomplete: str) -> list[str]:
    """``tune NAME``: the [tune.NAME] blocks."""
    return [n for n in _keys(_study(ctx), "tune") if n.startswith(incomplete)]


@_quiet
def complete_dataset(ctx: typer.Context, incomplete: str) -> list[str]:
    """``data ... NAME...``: the study's datasets, then their sources."""
    raw = _study(ctx)
    sources = [b["source"] for b in _bodies(raw, "datasets") if isinstance(b.get("source"), str)]
    return [n for n in dict.fromkeys(_keys(raw, "datasets") + sources) if n.startswith(incomplete)]


def words(*choices: str) -> Callable[[str], list[str]]:
    """The completion of an option that takes one of a few fixed words (``--backend``, ``--rerun``)."""

    def complete(incomplete: str) -> list[str]:
        return [w for w in choices if w.startswith(incomplete)]

    return complete
