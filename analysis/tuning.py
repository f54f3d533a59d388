"""The tuning tables of ``runner report``: for each ``[tune.NAME]`` block with trials, the best
trial of each tuned cell, its score and its values, in the formats of the other tables.

Named ``tune_NAME`` (``--table tune_NAME`` picks one). A table of text, not of aggregates:
one trial is one run per cell, there are no seeds to average.
"""

from __future__ import annotations

from runner.study.reports import default_style

from .formats import MISSING
from .text_table import TextTable


def tuning_table(entry: dict) -> TextTable:
    """One block's table from ``runner.tune.tuner.best_by_cell``."""
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
    return TextTable(f"tune_{tune.name}", title, header, rows, notes)


def _value(v) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).lower() if isinstance(v, bool) else str(v)
