"""A run's job file (``slurm.json`` in its folder): which SLURM array task owns the run.

Both sides of a SLURM launch read it, so it lives here rather than in either of them: the
launcher (``runner/backends/slurm.py``) writes it in two steps, a claim with the submission's
time before ``sbatch`` runs and the task id once ``sbatch`` answered; the task
(``runner/backends/slurm_job.py``) reads it to train only the runs still its own; ``runner
status`` and ``runner cancel`` read it to ask SLURM about the task.
"""

from __future__ import annotations

from pathlib import Path

from runner.records.runfolder import read_json, write_json_atomic

JOB_FILE = "slurm.json"


def claim(run_dir: Path, submitted_at: float) -> None:
    """Mark the run as this submission's before any task can start: a task of an older
    submission that starts meanwhile leaves it alone."""
    write_json_atomic(run_dir / JOB_FILE, {"job_id": None, "submitted_at": submitted_at})


def record(run_dir: Path, job_id: str, submitted_at: float, folder: Path) -> None:
    """Name the task sbatch gave the run, and the folder its log goes to."""
    write_json_atomic(run_dir / JOB_FILE, {"job_id": job_id, "submitted_at": submitted_at, "folder": str(folder)})


def task_of(run_dir: Path) -> str | None:
    """The array task ("123_4") that owns the run, once sbatch has named it."""
    return (read_json(run_dir / JOB_FILE) or {}).get("job_id")


def owned_by(run_dir: Path, tasks: set[str | None], submitted_at: float) -> bool:
    """Whether one of ``tasks`` (the ids of the task asking) owns the run: a run submitted again
    since (after a cancel) belongs to its newer task, never to two. Before sbatch answered, the
    submission's time says whose claim it is."""
    info = read_json(run_dir / JOB_FILE)
    if info is None:
        return True
    return info.get("job_id") in tasks or (info.get("job_id") is None and info.get("submitted_at") == submitted_at)


def job_log(run_dir: Path) -> str | None:
    """Where the array task's stdout/stderr went (submitit's folder)."""
    info = read_json(run_dir / JOB_FILE) or {}
    folder, jid = info.get("folder"), info.get("job_id")
    if not folder or not jid:
        return None
    return str(Path(folder) / f"{jid}_0_log.out")
