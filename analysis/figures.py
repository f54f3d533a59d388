"""Figures from the store: learning curves, a summary metric against another, bars.

``panels`` turns a ``[[figure]]`` (or a built-in one) into data, one panel per
value of its facet (one file each, PNG and PDF); ``render`` draws a panel with
matplotlib's object API (pyplot costs a second to import and is not needed).
A panel is drawn again only when its data or this module changed, so a report
over a finished study redraws nothing. No torch.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from runner.errors import SpecError
from runner.plan.expand import unknown_key
from runner.study.reports import CELL, Figure, default_style
from runner.records.runfolder import write_atomic

from .data import ReportData, RunView
from .tables import display

MAX_GROUPS = 12  # lines or bars per panel; beyond, the best ones (a note says so)
SIZE_IN, DPI = (6.4, 4.0), 125  # 800 x 500 pixels


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


@dataclass(frozen=True)
class Panel:
    kind: str
    stem: str  # file name without suffix
    title: str
    xlabel: str
    ylabel: str
    log_x: bool
    series: list[Series]
    note: str | None

    def digest(self) -> str:
        """Changes with the panel's data or this module's code (a dataclass repr is exact for floats)."""
        return hashlib.sha256(Path(__file__).read_bytes() + repr(self).encode()).hexdigest()[:16]


def panels(fig: Figure, data: ReportData) -> list[Panel]:
    """The panels of one figure over the selection: finished runs only, one per facet value."""
    for what, key in (("facet", fig.facet), ("group", fig.group), *(("where", k) for k in fig.where)):
        problem = key is not None and unknown_key([v.run for v in data.runs], key)
        if problem:
            raise SpecError(data.study.file, f"[[figure]] {fig.name}", f"{what}: {key}: {problem}")
    runs = [v for v in data.where(fig.where) if v.finished]
    facets: dict[str, list[RunView]] = {}
    for v in runs:
        facets.setdefault(display(v.value(fig.facet)) if fig.facet else "", []).append(v)
    out = []
    for facet, views in facets.items():
        groups = _groups(views, fig, facet)
        _refuse_mixed(fig, facet, groups, data)
        note = None
        if fig.kind != "scatter":
            groups, note = _best_groups(groups, fig.metric)
        elif len(groups) > MAX_GROUPS:
            note = f"{len(groups)} groups, each the mean over its seeds (error bars only up to {MAX_GROUPS} groups)"
        curves = data.series([v for m in groups.values() for v in m], fig.metric) if fig.kind == "curves" else {}
        scale = default_style(fig.metric).scale
        series = [s for s in (_series(fig, label, m, curves, scale) for label, m in groups.items()) if s]
        if not series:
            continue
        stem = fig.name + (f"-{_slug(facet)}" if facet else "")
        title = fig.title + (f" — {facet}" if facet else "")
        out.append(Panel(fig.kind, stem, title, _xlabel(fig), _axis_label(fig.metric), fig.log_x, series, note))
    return out


def _best_groups(groups: dict[str, list[RunView]], metric: str) -> tuple[dict[str, list[RunView]], str | None]:
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


def _groups(views: list[RunView], fig: Figure, facet: str) -> dict[str, list[RunView]]:
    """The runs of one panel by group label. Per cell, the label is the cell's without the facet
    (which the title names); two cells of one label (the same architecture and dataset in two
    matrices with other recipes) are told apart by their cell ids."""
    if fig.group != CELL:
        out: dict[str, list[RunView]] = {}
        for v in views:
            out.setdefault(display(v.value(fig.group)), []).append(v)
        return out
    cells: dict[str, list[RunView]] = {}
    for v in views:
        cells.setdefault(v.run.cell, []).append(v)
    labels = {c: "/".join(p for p in m[0].cell_label.split("/") if p != facet) or m[0].cell_label
              for c, m in cells.items()}
    twice = {label for label, n in Counter(labels.values()).items() if n > 1}
    return {(f"{labels[c]} [{c[:6]}]" if labels[c] in twice else labels[c]): m for c, m in cells.items()}


def _refuse_mixed(fig: Figure, facet: str, groups: dict[str, list[RunView]], data: ReportData) -> None:
    for label, members in groups.items():
        cells = sorted({v.run.cell for v in members})
        if len(cells) > 1:
            raise SpecError(data.study.file, f"[[figure]] {fig.name}",
                            f"group: {label}{' in ' + facet if facet else ''} holds {len(cells)} configurations (cells "
                            f"{', '.join(cells[:3])}); group by cell, or narrow the figure's where")


def _series(fig: Figure, label: str, members: list[RunView], curves: dict, scale: float) -> Series | None:
    """A group's seeds as one series; ``curves``: per run id, its (epochs, values) of the metric."""
    if fig.kind == "curves":
        return _curve(fig, label, [curves[v.run.id] for v in members if curves[v.run.id][0]], scale)
    pairs = []  # (x, y) of each seed with both values
    for v in members:
        y = v.metric(fig.metric)
        x = v.metric(fig.x) if fig.x is not None else 0.0
        if y is not None and x is not None:
            pairs.append((x, y * scale))
    if not pairs:
        return None
    y, ysd = _mean_sd([p[1] for p in pairs])
    if fig.kind == "bar":
        return Series(label, len(pairs), [0.0], [y], [y - ysd], [y + ysd])
    x, xsd = _mean_sd([p[0] for p in pairs])
    return Series(label, len(pairs), [x], [y], [y - ysd], [y + ysd], [x - xsd], [x + xsd])


def _curve(fig: Figure, label: str, runs: list[tuple[list[int], list[float]]], scale: float) -> Series | None:
    """Mean over seeds at each epoch any seed logged, with the band the figure asks for."""
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


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values)


def _xlabel(fig: Figure) -> str:
    if fig.kind == "curves":
        return "epoch"
    return fig.x if fig.kind == "scatter" else fig.group


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if default_style(metric).scale == 100 else metric


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "_"


# ---------------------------------------------------------------- drawing


def render(panel: Panel, out_dir: Path) -> list[Path]:
    """Draw the panel as ``out_dir/<stem>.png`` and ``.pdf`` (each replaced atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = MplFigure(figsize=SIZE_IN, dpi=DPI)  # fixed margins: a layout engine costs more than the drawing
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    legend = panel.kind != "bar" and len(panel.series) <= MAX_GROUPS
    # the legend sits right of the axes: loc="best" searches every point and costs more than the drawing
    fig.subplots_adjust(left=0.1, right=0.68 if legend else 0.98, top=0.93, bottom=0.3 if panel.kind == "bar" else 0.12)
    colors = [f"C{i % 10}" for i in range(len(panel.series))]
    names = [_short(f"{s.label} (n={s.n})") for s in panel.series]
    if panel.kind == "curves":
        for i, (s, c, name) in enumerate(zip(panel.series, colors, names)):
            ax.plot(s.x, s.y, color=c, linewidth=1.4, linestyle="-" if i < 10 else "--", label=name)
            if s.lo != s.y:
                ax.fill_between(s.x, s.lo, s.hi, color=c, alpha=0.18, linewidth=0)
    elif panel.kind == "scatter" and len(panel.series) > MAX_GROUPS:  # many points: one artist, no error bars
        ax.plot([s.x[0] for s in panel.series], [s.y[0] for s in panel.series], "o", color="C0", markersize=3,
                alpha=0.6)
    elif panel.kind == "scatter":
        for i, (s, c, name) in enumerate(zip(panel.series, colors, names)):
            ax.errorbar(s.x, s.y, yerr=_err([s], "y"), xerr=_err([s], "x"), fmt="o" if i < 10 else "s", color=c,
                        capsize=2, markersize=5, label=name)
    else:
        xs = list(range(len(panel.series)))
        ax.bar(xs, [s.y[0] for s in panel.series], color=colors, yerr=_err(panel.series, "y"), capsize=3)
        ax.set_xticks(xs, [_short(s.label) + f"\n(n={s.n})" for s in panel.series], rotation=30, ha="right", fontsize=7)
    xs = [x for s in panel.series for x in s.x]
    if panel.log_x and min(xs) > 0 and max(xs) / min(xs) >= 10:  # a log axis over a narrow range has no ticks
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if panel.kind == "scatter":  # 100k, 1M (and on a log axis no $10^{5}$, which mathtext is slow to set)
        ax.xaxis.set_major_formatter(FuncFormatter(_si))
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.set_title(panel.title, fontsize=9)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    if panel.note:
        fig.text(0.01, 0.005, panel.note, fontsize=6, color="0.4")
    paths = [out_dir / f"{panel.stem}.png", out_dir / f"{panel.stem}.pdf"]
    write_atomic(paths[0], lambda f: fig.savefig(f, format="png", metadata={"Software": None}))
    write_atomic(paths[1], lambda f: fig.savefig(f, format="pdf", metadata={"Creator": None, "Producer": None,
                                                                         "CreationDate": None}))
    return paths


def _short(text: str, width: int = 30) -> str:
    """A legend or tick label that fits beside the axes: its start and end, the middle elided."""
    return text if len(text) <= width else text[:12] + "…" + text[-(width - 13):]


def _si(value: float, _pos=None) -> str:
    """A tick label: 950, 12k, 3.5M, 2G."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def _err(series: list[Series], axis: str) -> list[list[float]]:
    """Asymmetric error bars of single-point series, as matplotlib takes them."""
    if axis == "y":
        return [[s.y[0] - s.lo[0] for s in series], [s.hi[0] - s.y[0] for s in series]]
    return [[s.x[0] - s.x_lo[0] for s in series], [s.x_hi[0] - s.x[0] for s in series]]


@dataclass(frozen=True)
class Drawn:
    """A panel on disk, as the HTML page lists it."""

    stem: str
    title: str
    note: str | None


@dataclass
class Drawing:
    drawn: list[Drawn]
    redrawn: int  # panels drawn this time
    unchanged: int  # panels whose files were up to date


def draw(figures: list[Figure], data: ReportData, out_dir: Path) -> Drawing:
    """Draw each figure's panels into ``out_dir``, skipping what is up to date: a figure whose inputs
    did not change is not even recomputed (``out_dir/.drawn.json`` remembers them and its panels),
    and of a recomputed one only the panels whose data changed are drawn again. The inputs: the
    figure's spec, this module, and each finished run it covers (id, label, when it finished; a run
    that trains again finishes anew)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / ".drawn.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    source = Path(__file__).read_bytes()
    result = Drawing([], 0, 0)
    covered: dict[str, list] = {}  # the finished runs of each distinct where (the built-ins share one)
    for fig in figures:
        runs = covered.setdefault(repr(fig.where), [(v.run.id, v.run.label, v.finished_at)
                                                    for v in data.where(fig.where) if v.finished])
        inputs = hashlib.sha256(source + repr((fig, runs)).encode()).hexdigest()[:16]
        known = manifest.get(fig.name) or {}
        on_disk = all((out_dir / f"{d['stem']}.{s}").exists() for d in known.get("panels", ()) for s in ("png", "pdf"))
        if known.get("inputs") == inputs and on_disk:
            result.drawn += [Drawn(d["stem"], d["title"], d["note"]) for d in known["panels"]]
            result.unchanged += len(known["panels"])
            continue
        entries = []
        for p in panels(fig, data):
            digest = p.digest()
            old = next((d for d in known.get("panels", ()) if d["stem"] == p.stem), None)
            if old and old["digest"] == digest and all((out_dir / f"{p.stem}.{s}").exists() for s in ("png", "pdf")):
                result.unchanged += 1
            else:
                render(p, out_dir)
                result.redrawn += 1
            entries.append({"stem": p.stem, "title": p.title, "note": p.note, "digest": digest})
            result.drawn.append(Drawn(p.stem, p.title, p.note))
        for gone in {d["stem"] for d in known.get("panels", ())} - {e["stem"] for e in entries}:
            for suffix in ("png", "pdf"):  # a facet with no finished run any more
                (out_dir / f"{gone}.{suffix}").unlink(missing_ok=True)
        manifest[fig.name] = {"inputs": inputs, "panels": entries}
        write_atomic(manifest_path, lambda f: f.write(json.dumps(manifest, indent=1, sort_keys=True).encode()))
    return result
