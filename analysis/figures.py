"""Figures from the store: learning curves, a summary metric against another, bars.

``panels`` turns a ``[[figure]]`` (or a built-in one) into data, one panel per
value of its facet (one file each, PNG and PDF); ``render`` draws a panel with
matplotlib's object API (pyplot costs a second to import and is not needed).
What differs between kinds (the series a panel plots, how they are drawn) is the
kind's, in ``analysis/figure_kinds.py``, which says how to add one; this module
does what they share. A panel is drawn again only when its data or the figure
code (this module, figure_kinds.py) changed, so a report over a finished study
redraws nothing. No torch.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runner.errors import SpecError
from runner.records.runfolder import write_atomic
from runner.study.reports import CELL, Figure, default_style
from runner.study.selectors import unknown_key

from . import figure_kinds
from .data import ReportData, RunView
from .figure_kinds import KINDS, MAX_GROUPS, Series
from .tables import display

SIZE_IN, DPI = (6.4, 4.0), 125  # 800 x 500 pixels
MIN_PANELS_PER_PROCESS = 4  # fewer, and starting a process costs more than it saves
MAX_PROCESSES = 8  # drawing processes at most, however many cores


def _code() -> bytes:
    """The source of the figure code: a change to it draws every figure again."""
    return Path(__file__).read_bytes() + Path(figure_kinds.__file__).read_bytes()


@dataclass(frozen=True)
class Panel:
    kind: str  # a name in figure_kinds.KINDS
    stem: str  # file name without suffix
    title: str
    xlabel: str
    ylabel: str
    log_x: bool
    series: list[Series]
    note: str | None

    def digest(self) -> str:
        """Changes with the panel's data or the figure code (a dataclass repr is exact for floats)."""
        return hashlib.sha256(_code() + repr(self).encode()).hexdigest()[:16]


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
    kind = KINDS[fig.kind]
    out = []
    for facet, views in facets.items():
        groups = _groups(views, fig, facet)
        _refuse_mixed(fig, facet, groups, data)
        series, note = kind.gather(fig, groups, data)
        if not series:
            continue
        stem = fig.name + (f"-{_slug(facet)}" if facet else "")
        title = fig.title + (f" — {facet}" if facet else "")
        out.append(Panel(fig.kind, stem, title, kind.xlabel(fig), _axis_label(fig.metric), fig.log_x, series, note))
    return out


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
    kind = KINDS[panel.kind]
    legend = kind.legend and len(panel.series) <= MAX_GROUPS
    # the legend sits right of the axes: loc="best" searches every point and costs more than the drawing
    fig.subplots_adjust(left=0.1, right=0.68 if legend else 0.98, top=0.93, bottom=kind.bottom)
    kind.draw(ax, panel.series)
    xs = [x for s in panel.series for x in s.x]
    if panel.log_x and min(xs) > 0 and max(xs) / min(xs) >= 10:  # a log axis over a narrow range has no ticks
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if kind.x_ticks:  # after the scale: setting one resets the tick labels
        ax.xaxis.set_major_formatter(FuncFormatter(kind.x_ticks))
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.set_title(panel.title, fontsize=9)
    ax.grid(alpha=0.3)
    if legend:
        _legend(fig, ax, left=0.69, top=0.93)
    if panel.note:
        fig.text(0.01, 0.005, panel.note, fontsize=6, color="0.4")
    paths = [out_dir / f"{panel.stem}.png", out_dir / f"{panel.stem}.pdf"]
    write_atomic(paths[0], lambda f: fig.savefig(f, format="png", metadata={"Software": None}))
    write_atomic(paths[1], lambda f: fig.savefig(f, format="pdf", metadata={"Creator": None, "Producer": None,
                                                                         "CreationDate": None}))
    return paths


LEGEND_PT = 7  # the legend's font size


def _legend(fig, ax, *, left: float, top: float) -> None:
    """Each series' name beside the axes after a key in its colour and style (a line, or the
    marker of a point), top down from ``(left, top)`` in figure coordinates. Plain artists at
    fixed places rather than ``ax.legend``, whose packing of boxes measures each text many times
    over: a panel drawn this way took 15 % less in an A/B run (setting the names' text is what is
    left of the legend's cost)."""
    from matplotlib.lines import Line2D

    step = 1.7 * LEGEND_PT / (SIZE_IN[1] * 72)  # a line and a bit, as a fraction of the figure's height
    key = 0.035  # the key's width, as a fraction of the figure's
    handles, labels = ax.get_legend_handles_labels()
    for i, (handle, label) in enumerate(zip(handles, labels)):
        line = handle[0] if isinstance(handle, tuple) else handle  # an error bar's container: its data line
        y = top - (i + 0.5) * step
        if line.get_linestyle() in ("None", "none", "", " "):  # a point: its marker, centred
            xs, ys = [left + key / 2], [y]
        else:
            xs, ys = [left, left + key], [y, y]
        fig.add_artist(Line2D(xs, ys, transform=fig.transFigure, color=line.get_color(), linestyle=line.get_linestyle(),
                              linewidth=line.get_linewidth(), marker=line.get_marker() if len(xs) == 1 else "",
                              markersize=line.get_markersize()))
        fig.text(left + key + 0.01, y, label, fontsize=LEGEND_PT, va="center")


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


def draw(figures: list[Figure], data: ReportData, out_dir: Path, meanwhile: Callable[[], None] | None = None) -> Drawing:
    """Draw each figure's panels into ``out_dir``, skipping what is up to date: a figure whose inputs
    did not change is not even recomputed (``out_dir/.drawn.json`` remembers them and its panels),
    and of a recomputed one only the panels whose data changed are drawn again. The inputs: the
    figure's spec, the figure code, and each finished run it covers (id, label, when it finished; a run
    that trains again finishes anew). ``meanwhile`` runs while the panels are being drawn (the
    report's tables are written then)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / ".drawn.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    source = _code()
    result = Drawing([], 0, 0)
    renderer = _Renderer(out_dir)
    covered: dict[str, list] = {}  # the finished runs of each distinct where (the built-ins share one)
    try:
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
                    renderer.add(p)
                    result.redrawn += 1
                entries.append({"stem": p.stem, "title": p.title, "note": p.note, "digest": digest})
                result.drawn.append(Drawn(p.stem, p.title, p.note))
            for gone in {d["stem"] for d in known.get("panels", ())} - {e["stem"] for e in entries}:
                for suffix in ("png", "pdf"):  # a facet with no finished run any more
                    (out_dir / f"{gone}.{suffix}").unlink(missing_ok=True)
            manifest[fig.name] = {"inputs": inputs, "panels": entries}
        if meanwhile is not None:
            meanwhile()
        renderer.finish()  # the manifest after the files: a kill in between only draws them again
    finally:
        renderer.close()
    write_atomic(manifest_path, lambda f: f.write(json.dumps(manifest, indent=1, sort_keys=True).encode()))
    return result


class _Renderer:
    """Draws panels as they are computed: in this process when there are few, else in one forked
    process per core, started once ``MIN_PANELS_PER_PROCESS`` wait (with the garbage collector on,
    whatever the command set). Drawing is matplotlib's Python
    code, a core's work per panel: 30 panels were three quarters of a report. The processes get
    each panel (its data, pickled) while this one computes the next and then writes the tables;
    they never touch the store, and return nothing but errors."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.waiting: list[Panel] = []
        self.pool = None
        self.jobs: list = []

    def add(self, panel: Panel) -> None:
        if self.pool is not None:
            self.jobs.append(self.pool.apply_async(render, (panel, self.out_dir)))
            return
        self.waiting.append(panel)
        workers = min(len(os.sched_getaffinity(0)), MAX_PROCESSES)
        if len(self.waiting) >= MIN_PANELS_PER_PROCESS and workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            _load_fonts()  # once, before the fork, rather than in every process
            self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=gc.enable)
            waiting, self.waiting = self.waiting, []
            for p in waiting:
                self.add(p)

    def finish(self) -> None:
        """Wait for every panel (the first error is raised here)."""
        if self.waiting:
            gc.enable()  # a matplotlib figure is a cycle: drawn here, each would stay (runner/cli/app.py)
        for p in self.waiting:
            render(p, self.out_dir)
        self.waiting = []
        for job in self.jobs:
            job.get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()  # finish() has waited for every job: nothing is cut short but on an error
            self.pool.join()
            self.pool = None


def _load_fonts() -> None:
    """Import both backends (the PDF one brings fontTools, 0.3 s) and load matplotlib's font list
    and the default font by drawing one character."""
    import matplotlib.backends.backend_pdf  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(0.5, 0.5), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.text(0, 0, "0", fontsize=7)
    fig.canvas.draw()
