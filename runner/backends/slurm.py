"""SLURM backend (``runner/backends/base.py``): the runs to do as job arrays, and SLURM's view of them.

Submission goes through submitit (what Hydra's SLURM launcher uses): it writes the batch
script from ``[slurm]`` (values quoted; ``runner/study/slurm.py`` validated them), pickles
the task function and submits the array with its throttle. Each array task trains a chunk
of runs in one process (``runner.backends.slurm_job.run_chunk``), writing only their run
folders on the shared filesystem; the database is written by the ``runner`` process that
ingests them (``runner status``). Arrays are split to stay under the cluster's
``MaxArraySize``. Each run folder records its task in ``slurm.json`` (``runner/backends/job_file.py``).

SLURM's view comes from ``squeue`` for live jobs and ``sacct -P`` for finished ones (the
text formats: their ``--json`` differs between versions and ``sacct --json`` misreports exit
codes). When neither answers for a task, it has no state: the caller shows the run as
unknown, never guesses it dead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Collection, Sequence

from runner.backends import job_file
from runner.errors import BackendError
from runner.records.provenance import command_line

if TYPE_CHECKING:
    from runner.study.slurm import SlurmOptions
    from runner.study.spec import Study


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


class SlurmBackend:
    """The study's runs on SLURM; a job handle is an array task id ("123_4"). ``options``: the
    validated ``[slurm]`` with the command line's flags, needed only to submit."""

    waiting = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING",
                         "SUSPENDED", "STOPPED"})
    running = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})
    final = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY",
                       "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"})

    def __init__(self, study: Study, options: SlurmOptions | None = None):
        self.runs_dir, self.study_dir, self.options = study.runs_dir, study.dir, options

    def submit(self, chunks: list[list[str]], *, job_name: str, ranks: int = 1,
               after: Sequence[str] = ()) -> list[str]:
        """One array task per chunk of run ids; returns the task ids ("123_4"), in chunk order."""
        import submitit

        from runner.backends.slurm_job import run_chunk

        executor = submitit.AutoExecutor(folder=self.runs_dir / ".slurm" / "%j", cluster="slurm")
        executor.update_parameters(**self.options.executor_parameters(job_name, ranks=ranks, after=list(after)))
        device = "cuda" if self.options.gpus_per_task else "cpu"
        submitted_at = time.time()
        for chunk in chunks:  # claimed by this submission before any task can start
            for rid in chunk:
                job_file.claim(self.runs_dir / rid, submitted_at)
        limit = max_array_size()
        job_ids: list[str] = []
        for start in range(0, len(chunks), limit):
            group = chunks[start:start + limit]
            dirs = [[str(self.runs_dir / rid) for rid in chunk] for chunk in group]
            try:
                jobs = executor.map_array(run_chunk, [str(self.study_dir)] * len(group), dirs, [device] * len(group),
                                          [submitted_at] * len(group), [command_line()] * len(group))
            except Exception as e:  # submitit raises on sbatch's refusal, with sbatch's words
                raise BackendError(f"sbatch refused the job array: {str(e).strip().splitlines()[-1]}") from None
            for chunk, job in zip(group, jobs):
                for rid in chunk:
                    job_file.record(self.runs_dir / rid, job.job_id, submitted_at, job.paths.folder)
                job_ids.append(job.job_id)
        return job_ids

    def poll(self, handles: Collection[str]) -> dict[str, str]:
        """SLURM's state of each array task ("123_4" -> "RUNNING"); tasks SLURM says nothing about are left
        out. squeue first (live jobs, pending array tasks one per line), then sacct for the rest."""
        job_ids = set(handles)
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

    def cancel(self, handles: Collection[str]) -> None:
        if handles:
            _run(["scancel", *handles])

    def handle_of(self, run_id: str) -> str | None:
        return job_file.task_of(self.runs_dir / run_id)

    def log_of(self, run_id: str) -> str | None:
        return job_file.job_log(self.runs_dir / run_id)


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
