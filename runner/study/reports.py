"""``[[table]]`` and ``[[figure]]`` blocks: what the paper shows, validated when the study loads.

A table aggregates the runs of each cell over seeds and lays the cells out along
``rows`` and ``columns``: any axis, dotted config key, or ``metric`` when the
table shows several metrics side by side (seed 004's train/val/test loss and
accuracy). A figure draws learning curves, a scatter of two summary metrics or
bars, one file per value of ``facet``. Torch-free, like the rest of the spec.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from runner.errors import SpecError, choices
from runner.records.summary import EPOCH_METRICS, SUMMARY_METRICS
from runner.study.messages import check_name, show_value, validate

METRIC = "metric"  # the pseudo-axis of a table with several metrics
CELL = "cell"  # group figures by cell: one line or point per configuration
Best = Literal["max", "min", "none"]
# The names a study may use; analysis draws and computes them (analysis/figure_kinds.py KINDS,
# analysis/tables.py AGGREGATES: the way to add one is there). Spelled out here so that
# loading a study stays analysis-free; tests/test_figures.py checks they are the same lists.
FigureKindName = Literal["curves", "scatter", "bar"]
AggregateName = Literal["mean", "median", "min", "max", "last"]
FIGURE_KINDS: tuple[str, ...] = get_args(FigureKindName)
AGGREGATES: tuple[str, ...] = get_args(AggregateName)


@dataclass(frozen=True)
class MetricStyle:
    """How one metric is shown: ``value × scale`` with ``decimals``, the best being the ``best`` one."""

    scale: float
    decimals: int
    best: str  # max, min or none (no bold)
    label: str


def default_style(metric: str) -> MetricStyle:
    """Accuracies as %, losses and costs lower-is-better, throughputs higher-is-better; others plain."""
    if "acc" in metric:
        return MetricStyle(100.0, 1, "max", metric)
    if "loss" in metric:
        return MetricStyle(1.0, 3, "min", metric)
    if metric.endswith("_per_s"):
        return MetricStyle(1.0, 0, "max", metric)
    if metric in ("params", "flops"):
        return MetricStyle(1e-6, 2, "min", metric)
    if metric.endswith(("_time_s", "_ms", "_mb")):
        return MetricStyle(1.0, 1, "min", metric)
    return MetricStyle(1.0, 3, "none", metric)


UNITS = {100.0: "%", 1e-3: "k", 1e-6: "M", 1e-9: "G"}


def unit_label(metric: str, scale: float) -> str:
    """``test_acc (%)``, ``params (M)``, ``x ×0.5``; a metric shown as stored keeps its name."""
    if scale == 1:
        return metric
    unit = next((u for s, u in UNITS.items() if abs(scale - s) <= 1e-12 * s), None)
    return f"{metric} ({unit})" if unit else f"{metric} ×{scale:g}"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    metrics: tuple[str, ...]
    aggregate: str
    where: dict[str, Any]
    styles: dict[str, MetricStyle]  # per metric
    labels: dict[str, str]  # display names of metrics and of row/column values
    # what the paper reports, printed beside ours: (row, column) as ``display`` joins their values
    published: dict[tuple[str, str], str] = field(default_factory=dict)
    published_source: str | None = None

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def scale(self) -> float:
        return self.styles[self.metric].scale

    @property
    def decimals(self) -> int:
        return self.styles[self.metric].decimals


@dataclass(frozen=True)
class Figure:
    name: str
    kind: str  # one of FIGURE_KINDS
    title: str
    metric: str  # curves: the per-epoch series; bar: the summary metric; scatter: y
    x: str | None  # scatter: the summary metric on x
    facet: str | None  # one file per value of this key (None: one file)
    group: str  # a line, point or bar per value (``cell``: per configuration)
    band: str  # curves: std, minmax or none
    log_x: bool
    where: dict[str, Any]
    builtin: bool = False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class _TableBlock(_Strict):
    name: str = Field(min_length=1)
    title: str | None = None
    rows: str | list[str] = "architecture"
    columns: str | list[str] = "dataset"
    metric: str | None = Field(None, description="one summary metric (default test_acc)")
    metrics: list[str] | None = Field(None, min_length=1, description='several, laid out along "metric"')
    aggregate: AggregateName = "mean"
    where: dict[str, Any] = {}
    scale: float | dict[str, float] | None = None
    decimals: int | dict[str, int] | None = None
    best: Best | dict[str, Best] | None = None
    labels: dict[str, str] = {}
    published: dict[str, dict[str, str]] = Field(
        {}, description='the paper\'s numbers beside ours: { ROW = { COLUMN = "89.7 ± 0.1" } }')
    published_source: str | None = Field(None, description='where they come from: "Altabaa et al. 2024, Table 2"')


class _FigureBlock(_Strict):
    name: str = Field(min_length=1)
    kind: FigureKindName
    title: str | None = None
    metric: str | None = None
    x: str | None = None
    y: str | None = None
    facet: str = "dataset"
    group: str = CELL
    band: Literal["std", "minmax", "none"] = "std"
    log_x: bool | None = None
    where: dict[str, Any] = {}


BUILTIN_FIGURES = (
    Figure("learning_curves", "curves", "Validation accuracy (%) per epoch, mean and std over seeds", "val_acc",
           None, "dataset", CELL, "std", False, {}, builtin=True),
    Figure("accuracy_vs_params", "scatter", "Test accuracy (%) against parameters", "test_acc", "params",
           "dataset", CELL, "none", True, {}, builtin=True),
    Figure("accuracy_vs_throughput", "scatter", "Test accuracy (%) against training throughput (images/s)",
           "test_acc", "train_images_per_s", "dataset", CELL, "none", True, {}, builtin=True),
)


def check_metric(name: str, known: tuple[str, ...], file: str, where: str, key: str, what: str) -> None:
    """A metric a table or figure shows must be one runs record: a typo would draw a table of "—"."""
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SpecError(file, where, f"{key}: unknown metric {show_value(name)}; {hint}{what}: {choices(known)}")


def _keys(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def parse_table(i: int, body: Any, file: str, check_key, check_where) -> Table:
    """One ``[[table]]`` block; ``check_key(key, where)`` validates an axis or dotted key."""
    where = f"[[table]] {body['name']}" if isinstance(body, dict) and isinstance(body.get("name"), str) else f"[[table]] #{i}"
    t = validate(_TableBlock, body, file, where)
    check_name(t.name, file, where)
    if t.metric is not None and t.metrics is not None:
        raise SpecError(file, where, "metric and metrics: give one metric, or a list as metrics")
    metrics = tuple(t.metrics) if t.metrics is not None else (t.metric or "test_acc",)
    for m in metrics:
        check_metric(m, SUMMARY_METRICS, file, where, "metrics" if t.metrics else "metric", "the summary metrics are")
    rows, columns = _keys(t.rows), _keys(t.columns)
    for what, keys in (("rows", rows), ("columns", columns)):
        if not keys:
            raise SpecError(file, where, f"{what}: must not be empty")
        for key in keys:
            if key != METRIC:
                check_key(key, f"{where} {what}")
    laid_out = rows + columns
    if len(set(laid_out)) != len(laid_out):
        raise SpecError(file, where, "rows and columns: each key may appear once")
    if len(metrics) > 1 and METRIC not in laid_out:
        raise SpecError(file, where, f'metrics: {len(metrics)} metrics need "metric" in rows or columns, '
                                     'e.g. columns = "metric"')
    if len(set(metrics)) != len(metrics):
        raise SpecError(file, where, "metrics: each metric may appear once")
    check_where(t.where, f"{where} where")
    styles = {m: _style(m, t, file, where, metrics) for m in metrics}
    published = {(row, col): text for row, by_col in t.published.items() for col, text in by_col.items()}
    if t.published_source is not None and not published:
        raise SpecError(file, where, "published_source: names the source of published numbers; add published = "
                                     '{ ROW = { COLUMN = "..." } } or leave it out')
    return Table(t.name, t.title or t.name, rows, columns, metrics, t.aggregate, dict(t.where), styles, dict(t.labels),
                 published, t.published_source)


def display(value) -> str:
    """A key's value as a table shows it and ``published`` names it: ``true``, ``0.001``,
    ``relational_attention``; a table's row (or column) of several keys joins them with " / "."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(display(v) for v in value) + "]"
    return str(value)


def _style(metric: str, t: _TableBlock, file: str, where: str, metrics: tuple[str, ...]) -> MetricStyle:
    base = default_style(metric)

    def pick(key: str, value, default):
        if isinstance(value, dict):
            for m in value:
                if m not in metrics:
                    raise SpecError(file, where, f"{key}.{m}: not a metric of this table; its metrics: {choices(metrics)}")
            return value.get(metric, default)
        return default if value is None else value

    scale = float(pick("scale", t.scale, base.scale))
    decimals = pick("decimals", t.decimals, base.decimals)
    if not 0 <= decimals <= 8:
        raise SpecError(file, where, f"decimals: must be between 0 and 8, got {decimals}")
    best = pick("best", t.best, base.best)
    return MetricStyle(scale, decimals, best, t.labels.get(metric, unit_label(metric, scale)))


def parse_figure(i: int, body: Any, file: str, check_key, check_where) -> Figure:
    where = f"[[figure]] {body['name']}" if isinstance(body, dict) and isinstance(body.get("name"), str) else f"[[figure]] #{i}"
    f = validate(_FigureBlock, body, file, where)
    check_name(f.name, file, where)
    if f.kind == "scatter":
        if f.metric is not None:
            raise SpecError(file, where, "metric: a scatter takes x and y (summary metrics)")
        metric, x = f.y or "test_acc", f.x or "params"
    else:
        for key in ("x", "y"):
            if getattr(f, key) is not None:
                raise SpecError(file, where, f"{key}: only a scatter has x and y; {f.kind} takes metric")
        metric, x = f.metric or ("val_acc" if f.kind == "curves" else "test_acc"), None
    if f.kind == "curves":
        if metric in SUMMARY_METRICS and metric not in EPOCH_METRICS:
            raise SpecError(file, where, f"metric: {metric} is recorded once per run, not per epoch; draw it with "
                                         f'kind = "bar" or "scatter", or plot one of {choices(EPOCH_METRICS)}')
        check_metric(metric, EPOCH_METRICS, file, where, "metric", "the per-epoch metrics are")
    else:
        for key, name in (("y" if f.kind == "scatter" else "metric", metric), ("x", x)):
            if name is not None:
                check_metric(name, SUMMARY_METRICS, file, where, key, "the summary metrics are")
    facet = None if f.facet in ("", "none") else f.facet
    for what, key in (("facet", facet), ("group", f.group)):
        if key is not None and key != CELL:
            check_key(key, f"{where} {what}")
    if facet == CELL:
        raise SpecError(file, where, 'facet: "cell" would draw one figure per configuration; use an axis or a key')
    check_where(f.where, f"{where} where")
    log_x = f.log_x if f.log_x is not None else f.kind == "scatter"
    return Figure(f.name, f.kind, f.title or f.name, metric, x, facet, f.group, f.band, log_x, dict(f.where))
