"""Tables of the paper: runs of a cell aggregated over seeds, rendered as Markdown.

Input is one row per planned run (``row``, ``column``, ``seed``, ``state``,
``value``): cells still missing stay in the table as "—" and are counted in a
footnote, never silently dropped; a cell with fewer finished seeds than planned
shows its n. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

MISSING = "—"


@dataclass(frozen=True)
class Cell:
    mean: float | None
    std: float | None
    n: int  # finished seeds with the metric
    planned: int


@dataclass(frozen=True)
class TableResult:
    name: str
    title: str
    metric: str
    rows_key: str
    columns_key: str
    rows: list
    columns: list
    cells: dict  # (row, column) -> Cell
    scale: float
    decimals: int


def build_table(*, name: str, title: str, metric: str, rows_key: str, columns_key: str, runs: list[dict],
                scale: float, decimals: int) -> TableResult:
    """Aggregate ``runs`` (dicts with row, column, seed, state, value) per (row, column) cell."""
    schema = {"row": pl.Utf8, "column": pl.Utf8, "seed": pl.Int64, "state": pl.Utf8, "value": pl.Float64}
    frame = pl.DataFrame([{**r, "row": str(r["row"]), "column": str(r["column"])} for r in runs], schema=schema)
    finished = pl.col("value").is_not_null() & (pl.col("state") == "done")
    agg = frame.group_by(["row", "column"], maintain_order=True).agg(
        pl.col("value").filter(finished).mean().alias("mean"),
        pl.col("value").filter(finished).std(ddof=1).alias("std"),
        finished.sum().alias("n"),
        pl.len().alias("planned"),
    )
    cells = {(r["row"], r["column"]): Cell(r["mean"], r["std"], r["n"], r["planned"]) for r in agg.iter_rows(named=True)}
    rows = list(dict.fromkeys(frame["row"].to_list()))
    columns = list(dict.fromkeys(frame["column"].to_list()))
    return TableResult(name, title, metric, rows_key, columns_key, rows, columns, cells, scale, decimals)


def format_cell(cell: Cell | None, scale: float, decimals: int) -> str:
    if cell is None or cell.n == 0 or cell.mean is None:
        return MISSING
    text = f"{cell.mean * scale:.{decimals}f}"
    if cell.n > 1 and cell.std is not None and not math.isnan(cell.std):
        text += f" ± {cell.std * scale:.{decimals}f}"
    if cell.n < cell.planned:
        text += f" (n={cell.n}/{cell.planned})"
    return text


def to_markdown(t: TableResult) -> str:
    header = [f"{t.rows_key} \\ {t.columns_key}", *t.columns]
    lines = [f"**{t.title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in t.rows:
        lines.append("| " + " | ".join([r, *(format_cell(t.cells.get((r, c)), t.scale, t.decimals)
                                              for c in t.columns)]) + " |")
    missing = sum(1 for c in t.cells.values() if c.n == 0)
    partial = sum(1 for c in t.cells.values() if 0 < c.n < c.planned)
    notes = []
    if missing:
        notes.append(f"{MISSING}: {missing} cell(s) with no finished run yet")
    if partial:
        notes.append(f"{partial} cell(s) with fewer finished seeds than planned (n shown)")
    seeds = sorted({c.planned for c in t.cells.values()})
    notes.append(f"metric `{t.metric}`" + (f" ×{t.scale:g}" if t.scale != 1 else "") +
                 f"; mean ± std (ddof 1) over {'/'.join(map(str, seeds))} planned seed(s) per cell")
    return "\n".join(lines + [""] + [f"_{n}_  " for n in notes]).rstrip() + "\n"
