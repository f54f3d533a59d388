"""Tables of text (not of aggregates over seeds): the tuning tables and the probe tables of
``runner report``, each in the formats of the other tables (Markdown, LaTeX, CSV, HTML), each
naming the command that regenerates it."""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

from .formats import _md, tex_escape


@dataclass(frozen=True)
class TextTable:
    name: str  # tune_NAME, probe_NAME: what --table picks
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]


def to_markdown(t: TextTable, command: str) -> str:
    lines = [f"**{_md(t.title)}**", "", "| " + " | ".join(_md(h) for h in t.header) + " |",
             "|---|" + "---:|" * (len(t.header) - 1)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines + [""] + [f"_{_md(n)}_  " for n in t.notes] + [f"_regenerate: `{command}`_", ""])


def to_latex(t: TextTable, command: str) -> str:
    lines = [f"% {t.title}", f"% regenerate: {command}", "% needs \\usepackage{booktabs}",
             f"\\begin{{tabular}}{{l{'r' * (len(t.header) - 1)}}}", r"\toprule",
             " & ".join(tex_escape(h) for h in t.header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in t.rows]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", ""])


def to_csv(t: TextTable) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(t.header)
    w.writerows(t.rows)
    return out.getvalue()


def to_html(t: TextTable, command: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.header)
    body = "\n".join("<tr><th>" + e(row[0]) + "</th>" + "".join(f"<td>{e(c)}</td>" for c in row[1:]) + "</tr>"
                     for row in t.rows)
    notes = "".join(f"<li>{e(n)}</li>" for n in t.notes)
    return (f'<section id="table-{e(t.name)}"><h2>{e(t.title)}</h2>\n<table><thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table>\n<ul class=\"notes\">{notes}<li>regenerate: <code>{e(command)}</code>"
            "</li></ul></section>\n")
