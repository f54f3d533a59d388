"""A ``TableResult`` as Markdown, LaTeX (booktabs, ready for ``\\input``), CSV, and HTML.

Each format shows the same cells and the same notes; each file names the command
that regenerates it. Text in cells: ``94.6 ± 0.4``, ``(n=2/3)`` when seeds are
missing, ``†`` when seeds ran on different hardware, "—" for a planned cell
with nothing finished, blank where the study plans no cell, and ``[86.4 ± 0.1]`` after
ours where the table states the paper's number (``published``).
"""

from __future__ import annotations

import csv
import html
import io

from runner.study.reports import METRIC

from .tables import Cell, TableResult

MISSING = "—"
MIXED_HARDWARE = "†"


def cell_parts(result: TableResult, cell: Cell) -> tuple[str, str | None, str]:
    """(value, std or None, suffix) as text; value is "—" when nothing finished has the metric."""
    style = result.table.styles[cell.metric]
    if cell.value is None:
        return MISSING, None, ""
    value = f"{cell.value * style.scale:.{style.decimals}f}"
    std = f"{cell.std * style.scale:.{style.decimals}f}" if cell.std is not None else None
    suffix = (f" (n={cell.n}/{cell.planned})" if cell.n < cell.planned else "")
    return value, std, suffix


def cell_text(result: TableResult, row, col) -> str:
    cell = result.cells.get((row, col))
    if cell is None:
        return ""
    value, std, suffix = cell_parts(result, cell)
    text = value + (f" ± {std}" if std else "") + suffix + (MIXED_HARDWARE if len(cell.hardware) > 1 else "")
    paper = result.published(row, col)
    return text + (f" [{paper}]" if paper else "")


def _header(result: TableResult, *, corner: bool = True) -> list[str]:
    """Row key names, then one heading per column; ``corner`` names the column key too (``a \\ b``)."""
    t = result.table
    keys = list(t.rows)
    if corner and t.columns != (METRIC,):
        keys[-1] += " \\ " + " / ".join(t.columns)
    return keys + [result.column_text(c) for c in result.columns]


# ---------------------------------------------------------------- Markdown


def to_markdown(result: TableResult, command: str) -> str:
    nrow = len(result.table.rows)
    header = _header(result)
    lines = [f"**{result.table.title}**", "", "| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "---|" * nrow + "---:|" * len(result.columns)]
    for row in result.rows:
        cells = []
        for col in result.columns:
            text = cell_text(result, row, col)
            cells.append(f"**{text}**" if (row, col) in result.bold else text)
        lines.append("| " + " | ".join([*(_md(v) for v in result.row_text(row)), *cells]) + " |")
    notes = [f"_{_md(n)}_  " for n in result.notes()]
    return "\n".join(lines + [""] + notes + [f"_regenerate: `{command}`_", ""])


def _md(text: str) -> str:
    return text.replace("|", "\\|")


# ---------------------------------------------------------------- LaTeX

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "±": r"$\pm$", "†": r"$^\dagger$",
        "−": "-", "×": r"$\times$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _tex_cell(result: TableResult, row, col) -> str:
    cell = result.cells.get((row, col))
    if cell is None:
        return ""
    value, std, suffix = cell_parts(result, cell)
    if value == MISSING:
        paper = result.published(row, col)
        return "---" + (f" {{\\scriptsize [{tex_escape(paper)}]}}" if paper else "")
    number = f"{value} \\pm {std}" if std else value
    number = f"\\mathbf{{{number}}}" if (row, col) in result.bold else number
    flag = r"^{\dagger}" if len(cell.hardware) > 1 else ""  # inside the math: "$...$$^\dagger$" would open display math
    paper = result.published(row, col)
    return (f"${number}{flag}$" + (f" {{\\scriptsize {suffix.strip()}}}" if suffix else "")
            + (f" {{\\scriptsize [{tex_escape(paper)}]}}" if paper else ""))


def to_latex(result: TableResult, command: str) -> str:
    """A booktabs ``tabular`` with its notes wrapped at the table's own width (the tabular is measured
    in a box first), and no float around it: ``\\input`` it inside your own ``table``."""
    nrow, ncol = len(result.table.rows), len(result.columns)
    header = [tex_escape(h) for h in _header(result, corner=False)]
    lines = [f"% {result.table.title}", f"% regenerate: {command}", "% needs \\usepackage{booktabs}",
             r"\begingroup\sbox0{%", f"\\begin{{tabular}}{{{'l' * nrow}{'r' * ncol}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    for row in result.rows:
        cells = [tex_escape(v) for v in result.row_text(row)] + [_tex_cell(result, row, col) for col in result.columns]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}%", r"\begin{minipage}{\wd0}\usebox0\par\smallskip",
              r"\footnotesize\raggedright"]
    lines += [f"{_tex_note(note)}\\par" for note in result.notes()]
    lines += [r"\end{minipage}\endgroup", ""]
    return "\n".join(lines)


def _tex_note(note: str) -> str:
    parts = note.split("`")  # `code` spans become \texttt
    return "".join(f"\\texttt{{{tex_escape(p)}}}" if i % 2 else tex_escape(p) for i, p in enumerate(parts))


# ---------------------------------------------------------------- CSV

CSV_FIELDS = ("table", "row_key", "row", "column_key", "column", "metric", "aggregate", "value", "std", "n", "planned",
              "scale", "best", "hardware", "text", "published")
SOURCE_FIELDS = ("table", "run", "cell", "label", "seed", "row", "column", "metric", "state", "value", "git_commit",
                 "hardware")


def to_csv(results: list[TableResult], *, header: bool = True) -> str:
    """One line per table cell, numbers as shown (scaled, full precision): the tables for a spreadsheet."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    if header:
        w.writerow(CSV_FIELDS)
    for result in results:
        t = result.table
        for row in result.rows:
            for col in result.columns:
                cell = result.cells.get((row, col))
                if cell is None:
                    continue
                s = t.styles[cell.metric].scale
                w.writerow([t.name, " / ".join(t.rows), " / ".join(result.row_text(row)), " / ".join(t.columns),
                            result.column_text(col),
                            cell.metric, t.aggregate, _num(cell.value, s), _num(cell.std, s), cell.n, cell.planned,
                            f"{s:g}", int((row, col) in result.bold), " | ".join(cell.hardware),
                            cell_text(result, row, col), result.published(row, col) or ""])
    return out.getvalue()


def sources_csv(results: list[TableResult]) -> str:
    """The runs behind the tables, one line per run and metric, values as stored."""
    out = io.StringIO()
    w = csv.DictWriter(out, SOURCE_FIELDS, lineterminator="\n")
    w.writeheader()
    for result in results:
        for s in result.sources:
            w.writerow({**s, "value": "" if s["value"] is None else repr(s["value"])})
    return out.getvalue()


def _num(value: float | None, scale: float) -> str:
    return "" if value is None else f"{value * scale:.12g}"  # 12 digits: exact, without 80.00000000000001


# ---------------------------------------------------------------- HTML


def to_html_table(result: TableResult, command: str) -> str:
    """One table as an HTML fragment (the report page strings these together)."""
    e = html.escape
    nrow = len(result.table.rows)
    head = "".join(f"<th>{e(h)}</th>" for h in _header(result))
    body = []
    for row in result.rows:
        cells = [f"<th>{e(v)}</th>" for v in result.row_text(row)]
        for col in result.columns:
            text = e(cell_text(result, row, col))
            cells.append(f"<td><b>{text}</b></td>" if (row, col) in result.bold else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{_html_note(n)}</li>" for n in result.notes())
    return (f'<section id="table-{e(result.table.name)}"><h2>{e(result.table.title)}</h2>\n'
            f'<table data-row-keys="{nrow}"><thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body) +
            f"\n</tbody></table>\n<ul class=\"notes\">{notes}<li>regenerate: <code>{e(command)}</code></li></ul>"
            "</section>\n")


def _html_note(note: str) -> str:
    parts = note.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))
