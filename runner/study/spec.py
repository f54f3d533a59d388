"""``experiments.toml`` -> a typed, validated ``Study``.

Every user mistake becomes a ``SpecError`` whose message is one line naming the
file, the table and key, and the fix, e.g.
``experiments.toml: [architectures.vit] heads: expected an integer, got "8"``.
Per-cell checks (hyperparameters after ``set``/``grid``/``[[override]]``) happen
in ``plan.py`` with the same messages; this module validates each table alone.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import architectures
import datasets

from runner.errors import SpecError, choices
from runner.study.messages import NAME_RE, check_name, show_value, validate
from runner.study.probes import Probe, parse_probes
from runner.study.recipe import Recipe
from runner.study.reports import Figure, Table, parse_figure, parse_table
from runner.study.slurm import SlurmOptions
from runner.study.tune import Tune, parse_tunes

AXES = ("architecture", "dataset", "seed", "matrix")
SECTIONS = ("architecture", "dataset", "train")
MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------- the typed study


@dataclass(frozen=True)
class Architecture:
    name: str
    model: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Matrix:
    name: str
    architectures: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    set: dict[str, Any]
    grid: dict[str, list[Any]]
    exclude: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Override:
    index: int  # 1-based position in the file, for messages
    match: dict[str, Any]
    set: dict[str, Any]


@dataclass(frozen=True)
class Study:
    file: str  # as the user named it, for messages
    dir: Path
    name: str
    store: str  # SQLAlchemy URL, sqlite paths made absolute
    runs_dir: Path
    report_dir: Path
    seeds: tuple[int, ...]
    defaults: dict[str, Any]
    architectures: dict[str, Architecture]
    datasets: dict[str, Dataset]
    matrices: tuple[Matrix, ...]
    overrides: tuple[Override, ...]
    tables: tuple[Table, ...]
    figures: tuple[Figure, ...] = ()  # the declared [[figure]]s (runner report adds its built-in ones)
    wandb: dict[str, Any] | None = None  # [study.wandb]: project, entity, mode, tags (optional mirror)
    slurm: dict[str, Any] = field(default_factory=dict)  # [slurm]: runner/study/slurm.py, validated
    tunes: dict[str, Tune] = field(default_factory=dict)  # [tune.NAME]: runner/study/tune.py
    probes: tuple[Probe, ...] = ()  # [[probe]]: runner/study/probes.py


# ---------------------------------------------------------------- table schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class _WandbSection(_Strict):
    project: str = Field(min_length=1)
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description='"offline" needs no account (upload later with wandb sync)')
    tags: list[str] = []


class _StudySection(_Strict):
    name: str = Field(min_length=1)
    store: str = "sqlite:///results/runner.db"
    runs_dir: str = "results/runs"
    report_dir: str = "results/report"
    seeds: list[int] = Field([0], min_length=1)
    wandb: _WandbSection | None = None


class _MatrixBlock(_Strict):
    name: str = Field(min_length=1)
    architectures: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    seeds: list[int] | None = Field(None, min_length=1)
    set: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    exclude: list[dict[str, Any]] = []


class _TunedBy(_Strict):
    study: str
    trial: int
    metric: str
    value: float


class _OverrideBlock(_Strict):
    match: dict[str, Any] = Field(min_length=1)
    set: dict[str, Any] = Field(min_length=1)
    tuned_by: _TunedBy | None = Field(None, description="written by `runner tune NAME --apply`: where the values come from")


TOP_LEVEL = ("study", "defaults", "architectures", "datasets", "matrix", "override", "table", "figure", "slurm",
             "tune", "probe")


# ---------------------------------------------------------------- dotted keys


def resolve_key(key: str, file: str, where: str, *, axes: bool = True) -> tuple[str, str | None]:
    """``"epochs"`` -> ("train", "epochs"); ``"architecture.depth"`` -> ("architecture", "depth");
    ``"seed"`` -> ("seed", None). Bare names are recipe keys, as in ``[defaults]``."""
    if key in AXES:
        if not axes:
            raise SpecError(file, where, f"{key}: an axis cannot be set here; use a [[matrix]] block's {key}s list")
        return key, None
    section, dot, rest = key.partition(".")
    if dot and section in SECTIONS and rest:
        if section == "train" and rest not in Recipe.model_fields:
            raise SpecError(file, where, f"{key}: unknown recipe key; valid keys: {choices(Recipe.model_fields)}")
        return section, rest
    if not dot and key in Recipe.model_fields:
        return "train", key
    raise SpecError(
        file, where,
        f"{key}: unknown key; use an axis ({', '.join(AXES)}), a recipe key ({choices(Recipe.model_fields)}), "
        "or a dotted key architecture.NAME / dataset.NAME / train.NAME",
    )


# ---------------------------------------------------------------- loading


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; raise SpecError with one line on any mistake."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(file, "", "no such file; pass the study with -f FILE or create experiments.toml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(file, "", f"cannot read: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        if m:
            raise SpecError(f"{file}:{m.group(1)}:{m.group(2)}", "", f"TOML syntax error: {msg}") from None
        raise SpecError(file, "", f"TOML syntax error: {msg}") from None
    study = parse_study(raw, file=file, base=path.resolve().parent)
    _check_places(study)
    return study


def _check_places(study: Study) -> None:
    """A results folder that does not exist and can never be made (``/proc/...``, under a file)
    is refused when the study is read, at plan time, not by a traceback at the first write. A
    read-only study is fine: reading commands read it as it is, writing ones refuse then."""
    from runner.records.places import impossible

    store = sqlite_path(study.store)
    for key, place in (("runs_dir", study.runs_dir), ("report_dir", study.report_dir),
                       ("store", store.parent if store is not None else None)):
        if place is not None and not place.exists() and (why := impossible(place)):
            raise SpecError(study.file, "[study]", f"{key}: {place} cannot be created: {why}; "
                                                   "choose a folder you can write")


def parse_study(raw: dict[str, Any], *, file: str, base: Path) -> Study:
    for key in raw:
        if key not in TOP_LEVEL:
            raise SpecError(file, f"[{key}]", f"unknown section; valid sections: {choices(TOP_LEVEL)}")
    if "study" not in raw:
        raise SpecError(file, "[study]", 'required section is missing; add [study] with name = "..."')
    st = validate(_StudySection, raw["study"], file, "[study]")
    check_name(st.name, file, "[study]")  # the SLURM job name and the Optuna studies' prefix
    _check_results_places(st, file)
    _check_seeds(st.seeds, file, "[study]")

    defaults = raw.get("defaults", {})
    validate(Recipe, defaults, file, "[defaults]")

    archs = {name: _architecture(name, body, file) for name, body in _tables(raw, "architectures", file).items()}
    dsets = {name: _dataset(name, body, file) for name, body in _tables(raw, "datasets", file).items()}

    matrices = tuple(_matrix(i, b, file, archs, dsets, tuple(st.seeds)) for i, b in enumerate(_blocks(raw, "matrix", file), 1))
    _unique([m.name for m in matrices], file, "[[matrix]]", "name")
    if not matrices:
        raise SpecError(file, "[[matrix]]", "no [[matrix]] block; add one with name, architectures and datasets")
    overrides = tuple(_override(i, b, file) for i, b in enumerate(_blocks(raw, "override", file), 1))
    check_key = lambda key, where: resolve_key(key, file, where)  # noqa: E731
    check_where = lambda rule, where: _check_where(rule, file, where, matrices)  # noqa: E731
    tables = tuple(parse_table(i, b, file, check_key, check_where) for i, b in enumerate(_blocks(raw, "table", file), 1))
    _unique([t.name for t in tables], file, "[[table]]", "name")
    figures = tuple(parse_figure(i, b, file, check_key, check_where)
                    for i, b in enumerate(_blocks(raw, "figure", file), 1))
    _unique([f.name for f in figures], file, "[[figure]]", "name")
    slurm = validate(SlurmOptions, raw.get("slurm", {}), file, "[slurm]").model_dump(exclude_defaults=True)
    tunes = parse_tunes(raw.get("tune", {}), file, lambda key, where, axes: resolve_key(key, file, where, axes=axes))
    probes = parse_probes(_blocks(raw, "probe", file), file, check_where)

    return Study(
        file=file, dir=base, name=st.name, store=_store_url(st.store, base),
        runs_dir=(base / st.runs_dir).resolve(), report_dir=(base / st.report_dir).resolve(),
        seeds=tuple(st.seeds), defaults=dict(defaults), architectures=archs, datasets=dsets,
        matrices=matrices, overrides=overrides, tables=tables, figures=figures,
        wandb=st.wandb.model_dump() if st.wandb else None, slurm=slurm, tunes=tunes, probes=probes,
    )


def _tables(raw, section, file) -> dict[str, dict]:
    body = raw.get(section, {})
    if not isinstance(body, dict):
        raise SpecError(file, f"[{section}]", f"expected tables [{section}.NAME], got {show_value(body)}")
    for name, table in body.items():
        if not NAME_RE.fullmatch(name):
            raise SpecError(file, f"[{section}.{name}]", "names use letters, digits, '_', '-' and '.'")
        if not isinstance(table, dict):
            raise SpecError(file, f"[{section}]", f"{name}: expected a table [{section}.{name}], got {show_value(table)}")
    return body


def _blocks(raw, section, file) -> list[dict]:
    body = raw.get(section, [])
    if not isinstance(body, list) or not all(isinstance(b, dict) for b in body):
        raise SpecError(file, f"[[{section}]]", f"write it as an array of tables: [[{section}]]")
    return body


def _architecture(name, body, file) -> Architecture:
    where = f"[architectures.{name}]"
    model = body.get("model")
    if not isinstance(model, str):
        raise SpecError(file, where, f"model: required, one of {choices(architectures.list_models())} or timm:<model>")
    family = architectures.get_family(model)
    if family is None:
        raise SpecError(file, where, f'model: unknown architecture "{model}"; choices: '
                                     f"{choices(architectures.list_models())}, or timm:<model>")
    params = {k: v for k, v in body.items() if k != "model"}
    validate(family.hparams, params, file, where)
    check_model = getattr(family.hparams, "check_model", None)  # timm: names and keywords, torch-free
    problem = check_model(model, params) if check_model else None
    if problem:
        raise SpecError(file, where, f"{problem[0]}: {problem[1]}")
    return Architecture(name, model, params)


def _dataset(name, body, file) -> Dataset:
    where = f"[datasets.{name}]"
    source = body.get("source")
    if not isinstance(source, str):
        raise SpecError(file, where, f"source: required, one of {choices(datasets.list_sources())}")
    src = datasets.get_source(source)
    if src is None:
        raise SpecError(file, where, f'source: unknown dataset "{source}"; choices: {choices(datasets.list_sources())}')
    options = {k: v for k, v in body.items() if k != "source"}
    validate(src.options, options, file, where)
    return Dataset(name, source, options)


def _matrix(i, body, file, archs, dsets, study_seeds) -> Matrix:
    where = f"[[matrix]] #{i}" if not isinstance(body.get("name"), str) else f"[[matrix]] {body['name']}"
    m = validate(_MatrixBlock, body, file, where)
    check_name(m.name, file, where)
    for kind, names, known in (("architectures", m.architectures, archs), ("datasets", m.datasets, dsets)):
        for n in names:
            if n not in known:
                raise SpecError(file, where, f'{kind}: unknown name "{n}"; defined: {choices(known)}')
        _unique(names, file, where, kind)
    seeds = tuple(m.seeds) if m.seeds is not None else study_seeds
    _check_seeds(list(seeds), file, where)
    for key in m.set:
        resolve_key(key, file, f"{where} set", axes=False)
    for key, values in m.grid.items():
        resolve_key(key, file, f"{where} grid", axes=False)
        if not values:
            raise SpecError(file, f"{where} grid", f"{key}: empty list; give at least one value")
    for rule in m.exclude:
        if not rule:
            raise SpecError(file, f"{where} exclude", "an empty rule would exclude every cell")
        for key in rule:
            resolve_key(key, file, f"{where} exclude")
    return Matrix(m.name, tuple(m.architectures), tuple(m.datasets), seeds, m.set, m.grid, tuple(m.exclude))


def _override(i, body, file) -> Override:
    where = f"[[override]] #{i}"
    o = validate(_OverrideBlock, body, file, where)
    for key in o.match:
        resolve_key(key, file, f"{where} match")
    for key in o.set:
        resolve_key(key, file, f"{where} set", axes=False)
    return Override(i, o.match, o.set)


def _check_where(rule: dict[str, Any], file: str, where: str, matrices) -> None:
    """A table's or figure's ``where``: known keys, and matrices the study defines."""
    for key in rule:
        resolve_key(key, file, where)
    if rule.get("matrix") is not None:
        names = rule["matrix"] if isinstance(rule["matrix"], list) else [rule["matrix"]]
        for n in names:
            if n not in {m.name for m in matrices}:
                raise SpecError(file, where, f'matrix: unknown matrix "{n}"; defined: {choices(m.name for m in matrices)}')


def _check_seeds(seeds: list[int], file: str, where: str) -> None:
    for s in seeds:
        if not 0 <= s <= MAX_SEED:
            raise SpecError(file, where, f"seeds: {s} is out of range; seeds are integers from 0 to {MAX_SEED}")
    _unique(seeds, file, where, "seeds")


def _unique(names, file, where, key) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise SpecError(file, where, f"{key}: {show_value(n)} appears twice; each entry must be unique")
        seen.add(n)


def data_root(study: Study, root: str) -> str:
    """A dataset's ``root`` made absolute: relative paths are relative to the study file, like the store."""
    return str(study.dir / root)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL (None for a server): here, not in store.py, so that commands
    can tell a store that does not exist yet without importing SQLAlchemy (0.25 s)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        return Path(url[len(prefix):])
    return None


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\x00-\x1f]*")


def _check_results_places(st: "_StudySection", file: str) -> None:
    """``store`` is a database URL; no place holds a control character (a line break in a path
    would reach a batch script)."""
    if not _URL.fullmatch(st.store):
        raise SpecError(file, "[study]", f"store: {show_value(st.store)} is not a database URL; write "
                                         '"sqlite:///results/runner.db" (a file) or "postgresql+psycopg://user@host/db"')
    for key in ("runs_dir", "report_dir"):
        if re.search(r"[\x00-\x1f]", getattr(st, key)):
            raise SpecError(file, "[study]", f"{key}: {show_value(getattr(st, key))} holds a control character; "
                                             "write a plain path")


def _store_url(url: str, base: Path) -> str:
    """Make a relative SQLite path relative to the study file, not to the current directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str((base / url[len(prefix):]).resolve())
    return url
