"""The index's tables (SQLAlchemy Core) and its schema version, with the statements that bring an
older store up to it. Table names carry the ``mr_`` prefix so they never collide with Optuna's
tables in the same database."""

from __future__ import annotations

import sqlalchemy as sa

from runner.records.probes import probe_table

SCHEMA_VERSION = 4  # bumped by every table or column added (tests/test_store_schema.py keeps the old files)
# what makes a store of an older version this one, in place (the run folders fill in the rest);
# `runner sync --rebuild` recreates runner's tables of a store of any version instead
UPGRADES = {
    1: ("ALTER TABLE mr_runs ADD COLUMN code_hash VARCHAR(64)",  # 2: the code fingerprint of done runs
        "UPDATE mr_runs SET folder_sig = NULL"),  # read every folder again, to fill it in
    2: ("ALTER TABLE mr_runs ADD COLUMN warnings JSON",  # 3: what a run lost on the way, said by status
        "UPDATE mr_runs SET folder_sig = NULL"),
    3: ("DROP TABLE mr_metrics",  # 4: mr_series (create_all made it), a row per run and metric for one per value
        "ALTER TABLE mr_runs ADD COLUMN last_step INTEGER",
        "UPDATE mr_runs SET folder_sig = NULL"),
}
GONE = ("mr_metrics",)  # tables of older schemas, dropped by a rebuild

meta = sa.MetaData()

runs_table = sa.Table(
    "mr_runs", meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("cell", sa.String(32), index=True, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("study", sa.Text),
    sa.Column("matrices", sa.JSON),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), index=True, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("warnings", sa.JSON),  # what the run lost on the way (a cut metrics line, a missing checkpoint)
    sa.Column("summary", sa.JSON),
    sa.Column("progress", sa.JSON),  # the heartbeat: epoch, epochs, last metrics
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("code_hash", sa.String(64)),  # runner/records/fingerprint.py: what decides staleness
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("last_step", sa.Integer),  # the last metric step indexed: a poll's new points come after it
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("folder_sig", sa.Text),
    sa.Column("ingested_at", sa.Float),
)

attempts_table = sa.Table(
    "mr_attempts", meta,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("mr_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("host", sa.Text), sa.Column("pid", sa.Integer),
    sa.Column("device", sa.Text), sa.Column("gpu_model", sa.Text), sa.Column("gpu_count", sa.Integer),
    sa.Column("gpu_mem_mb", sa.Float),
    sa.Column("python", sa.Text), sa.Column("torch", sa.Text), sa.Column("cuda", sa.Text),
    sa.Column("cudnn", sa.Text), sa.Column("timm", sa.Text),
    sa.Column("git_commit", sa.String(64)), sa.Column("git_dirty", sa.Boolean), sa.Column("git_diff_hash", sa.Text),
    sa.Column("command", sa.Text),
    sa.Column("slurm_job_id", sa.Text), sa.Column("slurm_array_task_id", sa.Text),
    sa.Column("started_at", sa.Float), sa.Column("ended_at", sa.Float),
    sa.Column("status", sa.String(16)), sa.Column("reason", sa.Text), sa.Column("traceback", sa.Text),
    sa.Column("provenance", sa.JSON),
)

# A run's metric as JSON arrays of its points, in step order: one row when the folder is read
# whole (a finished run), one more per poll that saw new epochs of a run in flight (each starting
# at ``first_step``), so a poll only inserts. A tenth of the rows a row per point made.
series_table = sa.Table(
    "mr_series", meta,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("mr_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("first_step", sa.Integer, primary_key=True),
    sa.Column("steps", sa.Text, nullable=False),
    sa.Column("epochs", sa.Text, nullable=False),
    sa.Column("vals", sa.Text, nullable=False),
    sa.Column("times", sa.Text, nullable=False),
    sa.Column("last_step", sa.Integer),
    sqlite_with_rowid=False,  # rows kept in key order: smaller, and quicker to bulk insert
)

probes_table = probe_table(meta)  # runner/records/probes.py

meta_table = sa.Table(
    "mr_meta", meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text),
)
