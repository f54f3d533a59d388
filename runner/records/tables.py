"""The index's tables (SQLAlchemy Core); their version and upgrades are in ``schema.py``. Table
names carry the ``mr_`` prefix so they never collide with Optuna's tables in the same database."""

from __future__ import annotations

import sqlalchemy as sa

from runner.records.probes import probe_table

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
