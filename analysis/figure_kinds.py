"""The kinds of ``[[figure]]``, by name (``KINDS``, at the end): what each plots and how it draws it.

A kind is a ``FigureKind``: ``gather`` turns the runs of one panel, already grouped (a line,
point or bar per group), into series; ``draw`` puts those series on the axes; ``xlabel`` and the
layout fields say the rest. ``analysis/figures.py`` does what all kinds share (selection, facets,
groups, the frame of the drawing, files, skipping what is up to date) and looks the kind up here.

To add a kind:

1. here, write its gather and draw functions and register a ``FigureKind`` under its name in ``KINDS``;
2. add the name to ``FIGURE_KINDS`` in ``runner/study/reports.py``, so that ``runner plan`` accepts
   it without importing analysis (tests/test_figures.py checks the two lists are the same); if it
   takes other keys than ``metric`` (as a scatter takes ``x`` and ``y``), ``parse_figure`` there
   checks them;
3. a test in tests/test_figures.py of the data its panels plot.

Editing this file draws every figure again once (it is part of their cache key). No torch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from runner.study.reports import Figure, default_style

from .data import ReportData, RunView

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MAX_GROUPS = 12  # lines or bars per panel; beyond, the best ones (a note says so)


@dataclass(slots=True)  # not frozen: a scatter over a big study builds thousands, and frozen init is slow
class Series:
    """One line, point or bar: a group's seeds aggregated (x, y lists; lo/hi the band or error)."""

    label: str
    n: int
    x: list[float]
    y: list[float]
    lo: list[float]
    hi: list[float]
    x_lo: list[float] | None = None
    x_hi: list[float] | None = None


Groups = dict[str, list[RunView]]  # the runs of one panel by group label, in the order they are drawn


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure. ``gather(figure, groups, data)`` gives the panel's series (groups with
    nothing to plot left out) and its note, if any; ``draw(axes, series)`` draws them with labels
    for the legend."""

    gather: Callable[[Figure, Groups, ReportData], tuple[list[Series], str | None]]
    xlabel: Callable[[Figure], str]
    draw: Callable[[Axes, list[Series]], None]
    legend: bool = True  # a legend beside the axes (up to MAX_GROUPS series); bars name themselves on the ticks
    bottom: float = 0.12  # the margin under the axes, as a fraction of the height: room for the tick labels
    x_ticks: Callable[[float, object], str] | None = None  # how x tick labels read (None: matplotlib's way)


# ---------------------------------------------------------------- gathering


def best_groups(groups: Groups, metric: str) -> tuple[Groups, str | None]:
    """At most ``MAX_GROUPS`` lines or bars: those with the best summary value of the metric (for a
    curve, its last logged value), in their order; the first ones if no summary has it."""
    if len(groups) <= MAX_GROUPS:
        return groups, None
    best = default_style(metric).best
    scores = {}
    for label, members in groups.items():
        values = [x for v in members if (x := v.metric(metric)) is not None]
        scores[label] = statistics.fmean(values) if values else None
    if all(x is None for x in scores.values()) or best == "none":
        keep, how = list(groups)[:MAX_GROUPS], "first"
    else:
        sign = -1 if best == "max" else 1
        keep = sorted(groups, key=lambda g: (scores[g] is None, sign * (scores[g] or 0.0)))[:MAX_GROUPS]
        how = f"{'highest' if best == 'max' else 'lowest'} {metric}"
    return ({g: m for g, m in groups.items() if g in keep},
            f"the {MAX_GROUPS} of {len(groups)} groups with the {how}; narrow with --where" if how != "first"
            else f"the first {MAX_GROUPS} of {len(groups)} groups; narrow with --where")


def gather_curves(fig: Figure, groups: Groups, data: ReportData) -> tuple[list[Series], str | None]:
    """Per group, the metric's mean over seeds at each epoch any seed logged, with the figure's band."""
    groups, note = best_groups(groups, fig.metric)
    curves = data.series([v for m in groups.values() for v in m], fig.metric)  # run id -> (epochs, values)
    scale = default_style(fig.metric).scale
    series = (_curve(fig, label, [curves[v.run.id] for v in m if curves[v.run.id][0]], scale)
              for label, m in groups.items())
    return [s for s in series if s], note


def _curve(fig: Figure, label: str, runs: list[tuple[list[int], list[float]]], scale: float) -> Series | None:
    by_epoch: dict[int, list[float]] = {}
    for epochs, values in runs:
        for e, v in zip(epochs, values):
            by_epoch.setdefault(e, []).append(v * scale)
    if not by_epoch:
        return None
    xs = sorted(by_epoch)
    stats = [_mean_sd(by_epoch[e]) for e in xs]
    ys = [m for m, _ in stats]
    if fig.band == "minmax":
        lo, hi = [min(by_epoch[e]) for e in xs], [max(by_epoch[e]) for e in xs]
    elif fig.band == "std":
        lo, hi = [m - sd for m, sd in stats], [m + sd for m, sd in stats]
    else:
        lo, hi = ys, ys
    return Series(label, len(runs), [float(x) for x in xs], ys, lo, hi)


def gather_points(fig: Figure, groups: Groups, data: ReportData) -> tuple[list[Series], str | None]:
    """Per group, one point: the mean of ``x`` and of ``y`` over the seeds that have both, ± their std.
    Every group keeps its point (a scatter shows the whole study)."""
    note = (f"{len(groups)} groups, each the mean over its seeds (error bars only up to {MAX_GROUPS} groups)"
            if len(groups) > MAX_GROUPS else None)
    scale = default_style(fig.metric).scale
    series = []
    for label, members in groups.items():
        pairs = [(x, y * scale) for v in members if (y := v.metric(fig.metric)) is not None
                 and (x := v.metric(fig.x)) is not None]
        if pairs:
            y, ysd = _mean_sd([p[1] for p in pairs])
            x, xsd = _mean_sd([p[0] for p in pairs])
            series.append(Series(label, len(pairs), [x], [y], [y - ysd], [y + ysd], [x - xsd], [x + xsd]))
    return series, note


def gather_bars(fig: Figure, groups: Groups, data: ReportData) -> tuple[list[Series], str | None]:
    """Per group, one bar: the metric's mean over seeds, ± its std."""
    groups, note = best_groups(groups, fig.metric)
    scale = default_style(fig.metric).scale
    series = []
    for label, members in groups.items():
        values = [y * scale for v in members if (y := v.metric(fig.metric)) is not None]
        if values:
            y, ysd = _mean_sd(values)
            series.append(Series(label, len(values), [0.0], [y], [y - ysd], [y + ysd]))
    return series, note


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values)


# ---------------------------------------------------------------- drawing


def draw_curves(ax: Axes, series: list[Series]) -> None:
    """A line per series, dashed after the tenth colour, in a band unless the figure asked for none."""
    for i, (s, c, name) in enumerate(zip(series, _colors(series), _names(series))):
        ax.plot(s.x, s.y, color=c, linewidth=1.4, linestyle="-" if i < 10 else "--", label=name)
        if s.lo != s.y:
            ax.fill_between(s.x, s.lo, s.hi, color=c, alpha=0.18, linewidth=0)


def draw_points(ax: Axes, series: list[Series]) -> None:
    """Up to ``MAX_GROUPS`` points with error bars in both directions; beyond, plain points as one artist."""
    if len(series) > MAX_GROUPS:
        ax.plot([s.x[0] for s in series], [s.y[0] for s in series], "o", color="C0", markersize=3, alpha=0.6)
        return
    for i, (s, c, name) in enumerate(zip(series, _colors(series), _names(series))):
        ax.errorbar(s.x, s.y, yerr=_err([s], "y"), xerr=_err([s], "x"), fmt="o" if i < 10 else "s", color=c,
                    capsize=2, markersize=5, label=name)


def draw_bars(ax: Axes, series: list[Series]) -> None:
    """A bar per series with its error bar, named (and its n given) on the slanted tick below it."""
    xs = list(range(len(series)))
    ax.bar(xs, [s.y[0] for s in series], color=_colors(series), yerr=_err(series, "y"), capsize=3)
    ax.set_xticks(xs, [_short(s.label) + f"\n(n={s.n})" for s in series], rotation=30, ha="right", fontsize=7)


def _colors(series: list[Series]) -> list[str]:
    return [f"C{i % 10}" for i in range(len(series))]


def _names(series: list[Series]) -> list[str]:
    return [_short(f"{s.label} (n={s.n})") for s in series]


def _short(text: str, width: int = 30) -> str:
    """A legend or tick label that fits beside the axes: its start and end, the middle elided."""
    return text if len(text) <= width else text[:12] + "…" + text[-(width - 13):]


def _err(series: list[Series], axis: str) -> list[list[float]]:
    """Asymmetric error bars of single-point series, as matplotlib takes them."""
    if axis == "y":
        return [[s.y[0] - s.lo[0] for s in series], [s.hi[0] - s.y[0] for s in series]]
    return [[s.x[0] - s.x_lo[0] for s in series], [s.x_hi[0] - s.x[0] for s in series]]


def si(value: float, _pos=None) -> str:
    """A tick label: 950, 12k, 3.5M, 2G (and on a log axis no $10^{5}$, which mathtext is slow to set)."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


# The kinds a ``[[figure]]`` may name; runner/study/reports.py's FIGURE_KINDS lists the same names
KINDS: dict[str, FigureKind] = {
    "curves": FigureKind(gather_curves, lambda fig: "epoch", draw_curves),
    "scatter": FigureKind(gather_points, lambda fig: fig.x, draw_points, x_ticks=si),
    "bar": FigureKind(gather_bars, lambda fig: fig.group, draw_bars, legend=False, bottom=0.3),
}
