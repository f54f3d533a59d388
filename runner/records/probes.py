"""The probe results' part of the store: the ``mr_probes`` table and how a probe folder
(``<run>/probes/<name>-<key>/``, written by runner/probes/worker.py) becomes a row of it."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from runner.records.runfolder import read_json
from runner.states import State


def probe_table(meta: sa.MetaData) -> sa.Table:
    """``mr_probes``. No foreign key to ``mr_runs``: re-ingesting a run replaces its row, and a
    cascade would drop its probe results."""
    return sa.Table(
        "mr_probes", meta,
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("probe", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # done or failed
        sa.Column("summary", sa.JSON),
        sa.Column("settings", sa.JSON),
        sa.Column("reason", sa.Text),
        sa.Column("device", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("created_at", sa.Float),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("folder_sig", sa.Text),
    )


def probe_folders(runs_dir: Path, names: list[str]) -> list[tuple[str, str]]:
    """(run id, folder) of every probe result folder of the named runs."""
    found = []
    for name in names:
        try:
            found += [(name, e.path) for e in os.scandir(runs_dir / name / "probes") if e.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def probe_sig(path: str) -> str | None:
    """Size and mtime of the result (or the error) of a probe folder; None while it has neither."""
    for name in ("result.json", "error.json"):
        try:
            st = os.stat(f"{path}{os.sep}{name}")
            return f"{name}:{st.st_size}:{st.st_mtime_ns}"
        except FileNotFoundError:
            continue
    return None


def ingest_probe(conn, probes_table: sa.Table, run_id: str, path: Path, sig: str) -> int:
    """Replace the row of one probe result folder from its result.json (or error.json)."""
    done = sig.startswith("result.json")
    data = read_json(path / ("result.json" if done else "error.json"))
    if not data or data.get("run") != run_id:
        return 0
    row = dict(run_id=run_id, probe=data["probe"], key=data["key"], kind=data["kind"],
               state=(State.DONE if done else State.FAILED).value, summary=data.get("summary"), settings=data.get("settings"),
               reason=data.get("reason"), device=data.get("device"), seconds=data.get("seconds"),
               created_at=data.get("time"), folder=str(path), folder_sig=sig)
    c = probes_table.c
    conn.execute(probes_table.delete().where(c.run_id == run_id, c.probe == row["probe"], c.key == row["key"]))
    conn.execute(probes_table.insert().values(**row))
    return 1
