"""A ``[[table]]``: the runs of each cell aggregated over seeds, laid out along rows and columns.

Format-neutral: ``analysis/formats.py`` writes the result as Markdown, LaTeX,
CSV or HTML. Cells still missing stay in the table and are counted in a note,
never dropped; a cell with fewer finished seeds than planned carries its n; a
cell whose seeds ran on different hardware is flagged. Aggregation is polars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import polars as pl

from runner.states import State
from runner.study.reports import METRIC, Table, display

from .data import ReportData, RunView

SEP = "\x1f"  # joins the values of several row (or column) keys into one group key


@dataclass(frozen=True)
class Cell:
    metric: str
    value: float | None  # the aggregate over finished seeds, unscaled
    std: float | None  # with aggregate = mean and n >= 2
    n: int  # finished seeds with the metric
    planned: int  # planned seeds
    finished: int  # finished seeds (with or without the metric)
    hardware: tuple[str, ...]  # the devices its finished seeds ran on
    stale: int  # finished seeds trained with other code than now


@dataclass(frozen=True)
class TableResult:
    table: Table
    rows: list[tuple[str, ...]]  # display values of the row keys, in plan order
    columns: list[tuple[str, ...]]
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], Cell]
    bold: frozenset  # (row, column) pairs holding the best value of their column
    sources: list[dict]  # the runs behind the table, one line per run and metric

    def shown(self, cell: Cell) -> float | None:
        """The cell's value as displayed: scaled and rounded (what ties and bolding compare)."""
        if cell.value is None:
            return None
        style = self.table.styles[cell.metric]
        return round(cell.value * style.scale, style.decimals)

    def notes(self) -> list[str]:
        return table_notes(self)

    def key_text(self, keys: tuple[str, ...], values: tuple[str, ...]) -> list[str]:
        """Row or column values as shown: a metric by its label, anything else by ``labels`` if given."""
        t = self.table
        return [t.styles[v].label if k == METRIC else t.labels.get(v, v) for k, v in zip(keys, values)]

    def row_text(self, row: tuple[str, ...]) -> list[str]:
        return self.key_text(self.table.rows, row)

    def column_text(self, col: tuple[str, ...]) -> str:
        return " / ".join(self.key_text(self.table.columns, col))

    def published(self, row: tuple[str, ...], col: tuple[str, ...]) -> str | None:
        """What the paper reports for this cell (the table's ``published``), or None."""
        return self.table.published.get((" / ".join(row), " / ".join(col)))


@dataclass(frozen=True)
class Aggregate:
    """How a table cell reduces its seeds to one value: ``of(values, ok)``, a polars expression over
    the cell's rows, given ``values`` (the metric of its finished seeds that have it) and ``ok``
    (which rows those are); ``text``, what the table's note calls it; ``std``, whether the cell
    shows ± the sample std too."""

    of: Callable[[pl.Expr, pl.Expr], pl.Expr]
    text: str
    std: bool = False


def _last(values: pl.Expr, ok: pl.Expr) -> pl.Expr:
    return values.sort_by(pl.col("finished_at").filter(ok)).last()


# A table's ``aggregate``, by name. To add one: register it here and add its name to AGGREGATES in
# runner/study/reports.py, which refuses other names when the study loads (tests/test_figures.py
# checks the two lists are the same).
AGGREGATES: dict[str, Aggregate] = {
    "mean": Aggregate(lambda values, ok: values.mean(), "mean ± std (sample, n−1)", std=True),
    "median": Aggregate(lambda values, ok: values.median(), "median"),
    "min": Aggregate(lambda values, ok: values.min(), "minimum"),
    "max": Aggregate(lambda values, ok: values.max(), "maximum"),
    "last": Aggregate(_last, "value of the seed that finished last"),
}


def build_table(table: Table, data: ReportData) -> TableResult:
    """Aggregate the runs ``table.where`` keeps (within the selection) per table cell. Its keys,
    metrics and one configuration per cell were checked against the whole plan when the study
    loaded (``runner/plan/check.py``): a selection that holds fewer runs is no reason to refuse."""
    runs = data.where(table.where)

    def key_of(view: RunView, keys: tuple[str, ...], metric: str) -> tuple[str, ...]:
        return tuple(metric if k == METRIC else display(view.value(k)) for k in keys)

    records, sources = [], []
    for view in runs:
        for metric in table.metrics:
            row, col = key_of(view, table.rows, metric), key_of(view, table.columns, metric)
            value = view.metric(metric)
            records.append({"row": SEP.join(row), "column": SEP.join(col), "metric": metric, "cell": view.run.cell,
                            "finished": view.finished, "value": value, "finished_at": view.finished_at or 0.0,
                            "stale": view.state == State.STALE, "hardware": "|".join(view.hardware)})
            sources.append({"table": table.name, "run": view.run.id, "cell": view.run.cell, "label": view.run.label,
                            "seed": view.run.seed, "row": " / ".join(row), "column": " / ".join(col), "metric": metric,
                            "state": view.state, "value": value, "git_commit": view.git_commit,
                            "hardware": " | ".join(view.hardware)})
    frame = pl.DataFrame(records, schema={"row": pl.Utf8, "column": pl.Utf8, "metric": pl.Utf8, "cell": pl.Utf8,
                                          "finished": pl.Boolean, "value": pl.Float64, "finished_at": pl.Float64,
                                          "stale": pl.Boolean, "hardware": pl.Utf8})
    cells = _aggregate(frame, table)
    rows = _ordered(frame["row"], table.rows, table, data)
    columns = _ordered(frame["column"], table.columns, table, data)
    result = TableResult(table, rows, columns, cells, frozenset(), sources)
    return TableResult(table, rows, columns, cells, _best(result), sources)


def _ordered(keys: pl.Series, names: tuple[str, ...], table: Table, data: ReportData) -> list[tuple[str, ...]]:
    """Distinct row (or column) values in the order the study declares them: architectures and
    datasets as the matrices list them, grid values as the grid does, metrics as the table does;
    values declared nowhere keep the order the runs come in."""
    ranks = [_declared_rank(name, table, data) for name in names]
    seen = [tuple(k.split(SEP)) for k in dict.fromkeys(keys.to_list())]
    first = {k: i for i, k in enumerate(seen)}
    return sorted(seen, key=lambda k: (*(rank.get(v, len(rank)) for rank, v in zip(ranks, k)), first[k]))


def _declared_rank(name: str, table: Table, data: ReportData) -> dict[str, int]:
    if name == METRIC:
        return {m: i for i, m in enumerate(table.metrics)}
    wanted = table.where.get("matrix")
    wanted = set(wanted if isinstance(wanted, list) else [wanted]) if wanted else set()
    matrices = sorted(data.study.matrices, key=lambda m: m.name not in wanted)  # the table's own first
    values: list = []
    for m in matrices:
        values += {"architecture": m.architectures, "dataset": m.datasets, "seed": m.seeds,
                   "matrix": (m.name,)}.get(name, m.grid.get(name, ()))
    return {v: i for i, v in enumerate(dict.fromkeys(display(v) for v in values))}


def _aggregate(frame: pl.DataFrame, table: Table) -> dict:
    ok = pl.col("finished") & pl.col("value").is_not_null()
    value = pl.col("value").filter(ok)
    aggregate = AGGREGATES[table.aggregate]
    agg = frame.group_by(["row", "column", "metric"], maintain_order=True).agg(
        aggregate.of(value, ok).alias("value"),
        value.std(ddof=1).alias("std"),
        ok.sum().alias("n"),
        pl.len().alias("planned"),
        pl.col("finished").sum().alias("finished"),
        pl.col("hardware").filter(pl.col("finished")).unique().alias("hardware"),
        pl.col("stale").sum().alias("stale"),
    )
    cells = {}
    for r in agg.iter_rows(named=True):
        hardware = tuple(sorted({h for joined in r["hardware"] if joined for h in joined.split("|")}))
        std = r["std"] if aggregate.std and r["n"] >= 2 else None
        cells[(tuple(r["row"].split(SEP)), tuple(r["column"].split(SEP)))] = Cell(
            r["metric"], r["value"], std, r["n"], r["planned"], r["finished"], hardware, r["stale"])
    return cells


def _best(result: TableResult) -> frozenset:
    """Per column and metric, the cells showing the best value (ties all bold; none when all tie)."""
    bold = set()
    for col in result.columns:
        by_metric: dict[str, list] = {}
        for row in result.rows:
            cell = result.cells.get((row, col))
            if cell is not None and cell.value is not None:
                by_metric.setdefault(cell.metric, []).append((row, result.shown(cell)))
        for metric, shown in by_metric.items():
            direction = result.table.styles[metric].best
            values = {v for _, v in shown}
            if direction == "none" or len(values) < 2:
                continue
            best = max(values) if direction == "max" else min(values)
            bold.update((row, col) for row, v in shown if v == best)
    return frozenset(bold)


def table_notes(result: TableResult) -> list[str]:
    """The footnotes every format prints under the table, in the same words."""
    t, cells = result.table, list(result.cells.values())
    if not cells:
        return ["empty: the selection (--matrix, --where) holds none of this table's runs; `runner report` shows them"]
    unfinished = sum(1 for c in cells if c.finished == 0)
    no_value = sum(1 for c in cells if c.finished > 0 and c.n == 0)
    partial = sum(1 for c in cells if 0 < c.n < c.planned)
    mixed = [c for c in cells if len(c.hardware) > 1]
    stale = sum(1 for c in cells if c.stale)
    notes = []
    if unfinished:
        notes.append(f"—: {unfinished} cell(s) with no finished run yet")
    if no_value:
        missing = sorted({c.metric for c in cells if c.finished > 0 and c.n == 0})
        notes.append(f"—: {no_value} cell(s) whose finished runs have no {', '.join(missing)} in their summary")
    if partial:
        notes.append(f"n=k/N: {partial} cell(s) with k of N planned seeds finished")
    if mixed:
        devices = sorted({h for c in mixed for h in c.hardware})
        notes.append(f"†: {len(mixed)} cell(s) whose seeds ran on different hardware ({', '.join(devices)})")
    if stale:
        notes.append(f"{stale} cell(s) hold stale runs, trained with other code than now (`runner plan` says what "
                     "changed, `runner launch --rerun stale` trains them again)")
    if t.published:
        source = f" ({t.published_source})" if t.published_source else ""
        notes.append(f"[…]: the published number{source}, beside ours")
    planned = sorted({c.planned for c in cells})
    what = f"`{t.metric}` {_scaled(t.styles[t.metric].scale)}; " if len(t.metrics) == 1 else ""
    seeds = "/".join(map(str, planned)) if planned else "0"
    notes.append(f"{what}{AGGREGATES[t.aggregate].text} over {seeds} planned seed(s) per cell"
                 + ("; bold: the best of its column" if result.bold else ""))
    return notes


def _scaled(scale: float) -> str:
    return "as stored" if scale == 1 else f"×{scale:g}"
