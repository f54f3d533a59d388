"""SLURM backend: the runs to do as a job array, and SLURM's view of it.

Submission goes through submitit (what Hydra's SLURM launcher uses): it writes the batch
script from ``[slurm]`` (values quoted; ``runner/study/slurm.py`` validated them), pickles
the task function and submits the array with its throttle. Each array task trains a chunk
of runs in one process (``runner.backends.slurm_job.run_chunk``), writing only their run
folders on the shared filesystem; the database is written by the ``runner`` process that
ingests them (``runner status``). Arrays are split to stay under the cluster's
``MaxArraySize``. Each run folder records its task in ``slurm.json``.

SLURM's view comes from ``squeue`` for live jobs and ``sacct -P`` for finished ones (the
text formats: their ``--json`` differs between versions and ``sacct --json`` misreports exit
codes). When neither answers for a task, its state is None: the caller shows the run as
unknown, never guesses it dead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from runner.errors import BackendError
from runner.records.provenance import command_line
from runner.records.runfolder import read_json, write_json_atomic

JOB_FILE = "slurm.json"
# job states after which SLURM will not run the task again by itself
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
# the task waits to run (again)
WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED", "STOPPED"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "squeue", "sacct", "scancel") if shutil.which(c) is None]
    if missing:
        raise BackendError(f"--backend slurm: {', '.join(missing)} not found on PATH; run this on a SLURM login "
                           "node (or use the local backend: --workers N / --gpus N)")


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices must stay below it); SLURM's default when unknown."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 1001
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(m.group(1)) if m else 1001


def submit(runs_dir: Path, study_dir: Path, chunks: list[list[str]], parameters: dict, device: str) -> list[str]:
    """Submit one array task per chunk of run ids; returns the task ids ("123_4"), in chunk order."""
    import submitit

    from runner.backends.slurm_job import run_chunk

    executor = submitit.AutoExecutor(folder=runs_dir / ".slurm" / "%j", cluster="slurm")
    executor.update_parameters(**parameters)
    submitted_at = time.time()
    for chunk in chunks:  # claimed by this submission before any task can start
        for rid in chunk:
            write_json_atomic(runs_dir / rid / JOB_FILE, {"job_id": None, "submitted_at": submitted_at})
    limit = max_array_size()
    job_ids: list[str] = []
    for start in range(0, len(chunks), limit):
        group = chunks[start:start + limit]
        dirs = [[str(runs_dir / rid) for rid in chunk] for chunk in group]
        try:
            jobs = executor.map_array(run_chunk, [str(study_dir)] * len(group), dirs, [device] * len(group),
                                      [submitted_at] * len(group), [command_line()] * len(group))
        except Exception as e:  # submitit raises on sbatch's refusal, with sbatch's words
            raise BackendError(f"sbatch refused the job array: {str(e).strip().splitlines()[-1]}") from None
        for chunk, job in zip(group, jobs):
            for rid in chunk:
                write_json_atomic(runs_dir / rid / JOB_FILE, {"job_id": job.job_id, "submitted_at": submitted_at,
                                                             "folder": str(job.paths.folder)})
            job_ids.append(job.job_id)
    return job_ids


def task_of(run_dir: Path) -> str | None:
    """The array task ("123_4") that owns the run, once sbatch has named it."""
    return (read_json(run_dir / JOB_FILE) or {}).get("job_id")


def states(job_ids: set[str]) -> dict[str, str]:
    """SLURM's state of each array task ("123_4" -> "RUNNING"); tasks SLURM says nothing about are left
    out. squeue first (live jobs, pending array tasks one per line), then sacct for the rest."""
    if not job_ids:
        return {}
    out: dict[str, str] = {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    text = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)])
    for line in (text or "").splitlines():
        jid, _, state = line.strip().partition("|")
        if jid in job_ids:
            out[jid] = state.strip()
    rest = job_ids - set(out)
    if rest:
        text = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(sorted(rest))])
        for line in (text or "").splitlines():
            jid, _, state = line.strip().partition("|")
            for one in _expand(jid):
                if one in rest:
                    out[one] = state.split()[0] if state.strip() else "UNKNOWN"
    return out


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])


def _expand(jid: str) -> list[str]:
    """sacct's "123_[0-3,7%2]" for array tasks not started yet -> ["123_0", ..., "123_3", "123_7"]."""
    m = re.match(r"^(\d+)_\[([^\]]+)\]$", jid)
    if not m:
        return [jid]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _run(cmd: list[str]) -> str | None:
    """A SLURM command's stdout, or None when it failed (not there, timed out, or refused)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "SLURM_TIME_FORMAT": "standard"})
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def job_log(run_dir: Path) -> str | None:
    """Where the array task's stdout/stderr went (submitit's folder)."""
    info = read_json(run_dir / JOB_FILE) or {}
    folder, jid = info.get("folder"), info.get("job_id")
    if not folder or not jid:
        return None
    return str(Path(folder) / f"{jid}_0_log.out")

