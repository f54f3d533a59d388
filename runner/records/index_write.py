"""The write half of an ingest: rows read from run folders (``folder_rows.py``) put into the
index's tables in the caller's transaction, a batch at a time, bulk inserts going straight to the
driver."""

from __future__ import annotations

import json

import sqlalchemy as sa

from runner.records.folder_rows import Rows, dumps
from runner.records.tables import attempts_table, runs_table, series_table

def write_grown(conn, rows: list[Rows], last_steps: dict[str, int | None]) -> None:
    """Index runs whose metrics only grew (``folder_rows.rows_of`` with ``grown``): their
    ``mr_runs`` row updated, their attempt rows kept, and their new points inserted as rows of
    their own. A line half written at the last ingest was not indexed then, so it comes after
    every point held (``last_steps``: the last step indexed of each run). A run that resumed from
    an earlier checkpoint logs steps the index holds from its abandoned attempt: the held points
    from its first new step on go first."""
    if not rows:
        return
    cut, new = {}, []
    for r in rows:
        rid, held = r[0]["id"], last_steps.get(r[0]["id"])
        if not r[2]:
            r[0]["last_step"] = held
            continue
        first = min((row[2] for row in r[2] if row[2] is not None), default=None)
        if held is not None and (first is None or first <= held):
            cut[rid] = first  # the held points from ``first`` on go; the new ones are the last
        new += r[2]  # else they all come after ``held``: the run's last step is the rows' own
    _update_runs(conn, [r[0] for r in rows])
    if cut:
        _cut_series(conn, cut)
    if new:
        conn.exec_driver_sql(_insert_sql(conn, series_table), new)


def _cut_series(conn, cut: dict[str, int | None]) -> None:
    """Drop the points at or after each run's given step (all of them for None) from its series."""
    s = series_table.c
    kept = []
    rows = conn.execute(sa.select(s.run_id, s.name, s.first_step, s.steps, s.epochs, s.vals, s.times)
                        .where(s.run_id.in_(list(cut)))).all()
    for rid, name, _, *arrays in rows:
        cols = [json.loads(a) for a in arrays]
        keep = [k for k, step in enumerate(cols[0]) if cut[rid] is not None and step is not None and step < cut[rid]]
        if keep:
            cols = [[col[k] for k in keep] for col in cols]
            kept.append((rid, name, cols[0][0], *map(dumps, cols), max(x for x in cols[0] if x is not None)))
    conn.execute(series_table.delete().where(s.run_id.in_(list(cut))))
    if kept:
        conn.exec_driver_sql(_insert_sql(conn, series_table), kept)


def write_whole(conn, rows: list[Rows], replace: list[str]) -> None:
    """Index a batch of runs in one transaction: drop what the index held of the runs it already
    knew (``replace``), then one bulk insert per table. Series rows, one per run and metric, go
    to the driver's ``executemany`` as the plain tuples the readers made: SQLAlchemy's per-row
    parameter processing costs more than SQLite's insert itself."""
    for i in range(0, len(replace), 500):
        ids = replace[i:i + 500]
        for t in (series_table, attempts_table):
            conn.execute(t.delete().where(t.c.run_id.in_(ids)))
        conn.execute(runs_table.delete().where(runs_table.c.id.in_(ids)))
    if not rows:
        return
    _insert(conn, runs_table, [r[0] for r in rows])
    if attempts := [a for r in rows for a in r[1]]:
        _insert(conn, attempts_table, attempts)
    if series := [t for r in rows for t in r[2]]:
        conn.exec_driver_sql(_insert_sql(conn, series_table), series)


def _update_runs(conn, rows: list[dict]) -> None:
    """Set the columns each row has (all rows the same ones) in the ``mr_runs`` row of its ``id``.
    On SQLite straight to the driver, as ``_insert`` does: a launch's poll updates the row of
    every run in flight."""
    names = [n for n in rows[0] if n != "id"]
    if conn.dialect.paramstyle != "qmark":
        conn.execute(runs_table.update().where(runs_table.c.id == sa.bindparam("run")),
                     [{**{n: r[n] for n in names}, "run": r["id"]} for r in rows])
        return
    as_json = _json_columns(runs_table)
    conn.exec_driver_sql(f"UPDATE {runs_table.name} SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
                         [(*(dumps(r[n]) if n in as_json else r[n] for n in names), r["id"]) for r in rows])


def _json_columns(table: sa.Table) -> set[str]:
    return {c.name for c in table.columns if isinstance(c.type, sa.JSON)}


def _insert(conn, table: sa.Table, rows: list[dict]) -> None:
    """Bulk insert of dict rows. On SQLite straight to the driver, each JSON column serialized as
    SQLAlchemy's JSON type would (``None`` as JSON ``null``): its per-row parameter processing
    is a fifth of a 10,000-run sync. A server's driver gets SQLAlchemy's typed parameters."""
    if conn.dialect.paramstyle != "qmark":
        conn.execute(table.insert(), rows)
        return
    names = [c.name for c in table.columns]
    as_json = _json_columns(table)
    conn.exec_driver_sql(_insert_sql(conn, table), [
        tuple(dumps(row.get(n)) if n in as_json else row.get(n) for n in names) for row in rows])


def _insert_sql(conn, table: sa.Table) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"  # SQLite's driver, psycopg's
    return (f"INSERT INTO {table.name} ({', '.join(c.name for c in table.columns)}) "
            f"VALUES ({', '.join([mark] * len(table.columns))})")
