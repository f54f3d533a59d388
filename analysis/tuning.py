"""The tuning tables of ``runner report``: for each ``[tune.NAME]`` block with trials, the best
trial of each tuned cell, its score and its values, in the formats of the other tables.

Named ``tune_NAME`` (``--table tune_NAME`` picks one). A table of text, not of aggregates:
one trial is one run per cell, there are no seeds to average.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

from runner.report_spec import default_style

from .formats import MISSING, _md, tex_escape


@dataclass(frozen=True)
class TuningTable:
    name: str  # tune_NAME
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]


def tuning_table(entry: dict) -> TuningTable:
    """One block's table from ``runner.tune.best_by_cell``."""
    tune, status = entry["tune"], entry["status"]
    style = default_style(tune.metric)
    unit = " (%)" if style.scale == 100 else ""
    keys = [p.key for p in tune.space]
    header = ["cell", f"{tune.metric}{unit}", "trial", *keys, "run"]
    rows = []
    for r in entry["rows"]:
        value = MISSING if r["value"] is None else f"{r['value'] * style.scale:.{style.decimals}f}"
        rows.append([r["cell"], value, MISSING if r["trial"] is None else str(r["trial"]),
                     *(_value(r["params"].get(k)) for k in keys), r["run"] or MISSING])
    counts = (f"{status['complete']} complete, {status['pruned']} pruned, {status['failed']} failed"
              + (f", {status['running']} running" if status["running"] else "") + f" of {status['trials']} trial(s)")
    notes = [f"Optuna study `{status['study']}` ({tune.direction} {tune.metric}): {counts}."]
    if any(r["trial"] is None for r in entry["rows"]):
        notes.append(f"{MISSING}: no complete trial yet.")
    title = f"Tuning {tune.name}: the best trial of each tuned cell"
    return TuningTable(f"tune_{tune.name}", title, header, rows, notes)


def _value(v) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).lower() if isinstance(v, bool) else str(v)


def to_markdown(t: TuningTable, command: str) -> str:
    lines = [f"**{_md(t.title)}**", "", "| " + " | ".join(_md(h) for h in t.header) + " |",
             "|---|" + "---:|" * (len(t.header) - 1)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines + [""] + [f"_{_md(n)}_  " for n in t.notes] + [f"_regenerate: `{command}`_", ""])


def to_latex(t: TuningTable, command: str) -> str:
    lines = [f"% {t.title}", f"% regenerate: {command}", "% needs \\usepackage{booktabs}",
             f"\\begin{{tabular}}{{l{'r' * (len(t.header) - 1)}}}", r"\toprule",
             " & ".join(tex_escape(h) for h in t.header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in t.rows]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", ""])


def to_csv(t: TuningTable) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(t.header)
    w.writerows(t.rows)
    return out.getvalue()


def to_html(t: TuningTable, command: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.header)
    body = "\n".join("<tr><th>" + e(row[0]) + "</th>" + "".join(f"<td>{e(c)}</td>" for c in row[1:]) + "</tr>"
                     for row in t.rows)
    notes = "".join(f"<li>{e(n)}</li>" for n in t.notes)
    return (f'<section id="table-{e(t.name)}"><h2>{e(t.title)}</h2>\n<table><thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table>\n<ul class=\"notes\">{notes}<li>regenerate: <code>{e(command)}</code>"
            "</li></ul></section>\n")
