"""``runner report``: every table and figure of the study, from the store, in one pass.

``choose`` checks the names asked for against the study; ``build`` aggregates the data
``runner.commands.report_data`` gathered; ``write`` puts each table in every format, the
figures and a self-contained HTML page into the report directory; ``check`` lists the declared
cells that are not done at HEAD (for a paper's CI). Each output names the command that
regenerates it. ``runner.commands.report`` chains them as ``runner report`` does.
"""

from __future__ import annotations

import base64
import html
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from runner.errors import SelectionError, choices
from runner.records.runfolder import write_atomic
from runner.study.reports import BUILTIN_FIGURES, Figure, Table
from runner.study.spec import Study

from .data import ReportData
from .figures import Drawing, draw
from .formats import sources_csv, to_csv, to_html_table, to_latex, to_markdown
from .tables import TableResult, build_table
from . import text_table
from .probe_figures import ProbeFigure
from .probe_tables import probe_tables
from .text_table import TextTable
from .tuning import tuning_table

FORMATS = ("md", "latex", "csv", "html")


@dataclass
class Report:
    data: ReportData
    tables: list[TableResult]
    figures: list[Figure]
    command: list[str]  # the selection's part of the regenerating command
    complete: bool  # every table and figure of the study (not a --table/--figure choice)
    drawing: Drawing | None = None  # once written
    texts: list[TextTable] = field(default_factory=list)  # tune_NAME (best trial per tuned cell), probe_NAME
    probe_figures: list[ProbeFigure] = field(default_factory=list)  # attention maps of probed runs (the page)

    def regenerate(self, *extra: str) -> str:
        return shlex.join([*self.command, *extra])


@dataclass(frozen=True)
class Choice:
    """What a report builds, its names checked against the study."""
    tables: list[Table]  # the declared [[table]]s
    figures: list[Figure]  # to draw (none when figures are off)
    tunes: list[str]  # the tune_NAME tables
    probes: list[str]  # the probe_NAME tables
    with_figures: bool  # figures are drawn (off for --no-figures, --check, --runs)
    complete: bool  # every table and figure of the study (not a --table/--figure choice)


def figures_of(study: Study) -> list[Figure]:
    """The built-in figures, each replaced by a declared one of the same name, then the declared ones."""
    declared = {f.name: f for f in study.figures}
    return [declared.pop(f.name, f) for f in BUILTIN_FIGURES] + list(declared.values())


def choose(study: Study, tables: Iterable[str] = (), figures: Iterable[str] = (), *,
           with_figures: bool = True) -> Choice:
    """The chosen tables and figures (all if neither tables nor figures are named); an unknown
    name is refused before anything is read."""
    tables, figures = list(tables), list(figures)
    declared, drawable = study.tables, figures_of(study)
    tuned = [f"tune_{n}" for n in study.tunes]
    probed = [f"probe_{p.name}" for p in study.probes]
    _known("--table", tables, [t.name for t in declared] + tuned + probed, study.file,
           "[[table]] (or tune_NAME, probe_NAME)")
    _known("--figure", figures, [f.name for f in drawable], study.file, "[[figure]] (or built-in)")
    named = bool(tables or figures)
    return Choice(tables=[t for t in declared if t.name in tables] if named else list(declared),
                  figures=([f for f in drawable if f.name in figures] if named else drawable) if with_figures else [],
                  tunes=[n for n in tuned if n in tables] if named else tuned,
                  probes=[n for n in probed if n in tables] if named else probed,
                  with_figures=with_figures, complete=not named and with_figures)


def build(data: ReportData, chosen: Choice, command: list[str], *, tunings: Iterable[dict[str, Any]] = ()) -> Report:
    """Aggregate the chosen tables; figures are drawn by ``write``. ``tunings``: the best trial per
    tuned cell of each ``[tune.NAME]`` block with trials (``runner.tune.results.best_by_cell``)."""
    results = [build_table(t, data) for t in chosen.tables]
    probes, probe_figures = probe_tables(data, chosen.probes, with_figures=chosen.with_figures)
    texts = [tuning_table(e) for e in tunings if f"tune_{e['tune'].name}" in chosen.tunes] + probes
    return Report(data, results, chosen.figures, command, complete=chosen.complete, texts=texts,
                  probe_figures=probe_figures)


def _known(flag: str, names: list[str], known: list[str], file: str, what: str) -> None:
    for n in names:
        if n not in known:
            raise SelectionError(f"{flag} {n}: no such {what} in {file}; defined: {choices(known)}")


def render(report: Report, fmt: str, *, figures_dir: Path | None = None, generated: str | None = None) -> str:
    """The tables in one format, as ``runner report --format FMT`` prints them (html: the whole page,
    with the figures ``write`` drew into ``figures_dir``)."""
    if fmt == "md":
        return "\n".join([to_markdown(r, report.regenerate("--table", r.table.name)) for r in report.tables]
                         + [text_table.to_markdown(t, report.regenerate("--table", t.name)) for t in report.texts])
    if fmt == "latex":
        return "\n".join([to_latex(r, report.regenerate("--table", r.table.name, "--format", "latex"))
                          for r in report.tables]
                         + [text_table.to_latex(t, report.regenerate("--table", t.name, "--format", "latex"))
                            for t in report.texts])
    if fmt == "csv":  # one header per stream: the tables' long CSV, or (asked alone) the tuning tables
        if report.tables or not report.texts:
            return to_csv(report.tables)
        return "\n".join(text_table.to_csv(t) for t in report.texts)
    if fmt == "html":
        return html_page(report, figures_dir, generated=generated)
    raise SelectionError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")


def write(report: Report, out_dir: Path) -> dict[str, int]:
    """Write every table in each format, the runs behind them, the figures and (for a whole report)
    ``index.html``; each file replaced atomically. Returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def tables() -> None:
        for r in report.tables:
            name = r.table.name
            _write(out_dir / f"{name}.md", to_markdown(r, report.regenerate("--table", name)))
            _write(out_dir / f"{name}.tex", to_latex(r, report.regenerate("--table", name, "--format", "latex")))
            _write(out_dir / f"{name}.csv", to_csv([r]))
            _write(out_dir / f"{name}.runs.csv", sources_csv([r]))
        for t in report.texts:
            _write(out_dir / f"{t.name}.md", text_table.to_markdown(t, report.regenerate("--table", t.name)))
            _write(out_dir / f"{t.name}.tex", text_table.to_latex(t, report.regenerate("--table", t.name, "--format", "latex")))
            _write(out_dir / f"{t.name}.csv", text_table.to_csv(t))

    if report.figures:  # the tables are written while the figures are drawn
        report.drawing = draw(report.figures, report.data, out_dir / "figures", meanwhile=tables)
    else:
        tables()
    for f in report.probe_figures:
        if f.make is not None:
            f.png = f.make(out_dir / "figures")
    if report.complete:
        _write(out_dir / "index.html", html_page(report, out_dir / "figures"))
    d = report.drawing
    return {"tables": len(report.tables) + len(report.texts), "figures": len(d.drawn) if d else 0, "drawn": d.redrawn if d else 0,
            "unchanged": d.unchanged if d else 0}


def _write(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def check(report: Report) -> list[str]:
    """One line per declared table cell that is not wholly done at HEAD: missing seeds, or seeds
    done with other training code than now (stale), and what changed since."""
    problems = []
    for r in report.tables:
        for (row, col), cell in r.cells.items():
            where = f"{r.table.name}: {' / '.join(row + col)}"
            if cell.finished < cell.planned:
                problems.append(f"{where}: {cell.planned - cell.finished} of {cell.planned} seed(s) not done")
            if cell.stale:
                problems.append(f"{where}: {cell.stale} seed(s) stale (trained with other code than now)")
    reasons: dict[str, int] = {}
    for r in report.tables:
        shown = {s["run"] for s in r.sources}
        for v in report.data.runs:
            if v.run.id in shown and v.state == "stale" and v.reason:
                reasons[v.reason] = reasons.get(v.reason, 0) + 1
    problems += [f"stale: {n} run(s) {why}" for why, n in reasons.items()]
    return problems


# ---------------------------------------------------------------- the HTML page

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .7em;border-bottom:1px solid #ddd}
thead th{border-bottom:2px solid #444;text-align:left}td{text-align:right;font-variant-numeric:tabular-nums}
tbody th{text-align:left;font-weight:normal}.notes{color:#555;font-size:12px;padding-left:1.2em}
.meta{color:#555}figure{display:inline-block;margin:.5em;vertical-align:top}img{max-width:100%;width:640px}
figcaption{font-size:12px;color:#555;max-width:640px}code{font-size:12px}"""


def html_page(report: Report, figures_dir: Path | None, *, generated: str | None = None) -> str:
    """One self-contained page: every table, and the figures embedded as PNG (no external file)."""
    e = html.escape
    study = report.data.study
    generated = generated or time.strftime("%Y-%m-%d %H:%M:%S %Z")
    head = report.data.commit[:12] if report.data.commit else "none (not a git repository)"
    meta = (f"store <code>{e(study.store)}</code> · HEAD <code>{e(head)}</code> · generated {e(generated)} by <code>{e(report.regenerate())}</code>")
    nav = " · ".join(f'<a href="#table-{e(n)}">{e(n)}</a>'
                     for n in [r.table.name for r in report.tables] + [t.name for t in report.texts])
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(study.name)}: report</title>"
             f"<style>{STYLE}</style></head>\n<body>\n<h1>{e(study.name)}</h1>\n<p class=\"meta\">{meta}</p>\n"
             f"<nav>{nav}</nav>\n"]
    parts += [to_html_table(r, report.regenerate("--table", r.table.name)) for r in report.tables]
    parts += [text_table.to_html(t, report.regenerate("--table", t.name)) for t in report.texts]
    if report.drawing and report.drawing.drawn and figures_dir is not None:
        parts.append('<section id="figures"><h2>Figures</h2>\n')
        for p in report.drawing.drawn:
            png = base64.b64encode((figures_dir / f"{p.stem}.png").read_bytes()).decode()
            caption = e(p.title) + (f" ({e(p.note)})" if p.note else "") + f" · <code>figures/{e(p.stem)}.pdf</code>"
            parts.append(f'<figure id="figure-{e(p.stem)}"><img alt="{e(p.title)}" src="data:image/png;base64,{png}">'
                         f"<figcaption>{caption}</figcaption></figure>\n")
        parts.append("</section>\n")
    if any(f.png for f in report.probe_figures):
        parts.append('<section id="probe-figures"><h2>Probes</h2>\n')
        for f in (f for f in report.probe_figures if f.png):
            png = base64.b64encode(f.png.read_bytes()).decode()
            parts.append(f'<figure><img alt="{e(f.title)}" src="data:image/png;base64,{png}" style="width:auto">'
                         f"<figcaption>{e(f.title)} · <code>{e(str(f.png))}</code></figcaption></figure>\n")
        parts.append("</section>\n")
    parts.append("</body></html>\n")
    return "".join(parts)
