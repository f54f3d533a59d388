"""What one SLURM array task runs: its chunk of runs, one after another, in one process.

This is the worker's batch mode (``runner/train/worker.py``) inside submitit's job process, with
SLURM's signals wired to checkpoints:

* ``SIGUSR2``, sent ``signal_before_s`` ahead of the time limit (submitit's ``--signal``):
  the current run checkpoints at its next step and is marked interrupted, then the task
  requeues itself (``scontrol requeue``; the job is submitted with ``--requeue``). When it
  runs again, done runs are skipped and the interrupted one resumes from its checkpoint.
* ``SIGTERM`` (``scancel``, preemption): the current run checkpoints and stops; SLURM decides
  whether the task comes back (preemption with requeue) or not (cancelled: the next
  ``runner launch --backend slurm`` submits the run again).

submitit's own handlers are replaced on purpose: its checkpointing would exit from the
signal handler, before the training loop has written its checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def run_chunk(study_dir: str, run_dirs: list[str], device: str, submitted_at: float, command: str) -> dict:
    from runner.backends.job_file import owned_by
    from runner.records.provenance import COMMAND_ENV
    from runner.train import worker

    os.environ[COMMAND_ENV] = command  # provenance names the user's `runner launch`, not submitit's script
    # a task is "123_4" in an array, "123" when submitit sent a single chunk as a plain job
    me = {os.environ.get("SLURM_JOB_ID"), f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"}
    mine = [d for d in run_dirs if owned_by(Path(d), me, submitted_at)]
    threads = os.environ.get("SLURM_CPUS_PER_TASK")
    argv = ["--study-dir", study_dir, "--device", device, "--failed-since", str(submitted_at), "--runs", *mine]
    code = worker.main(argv + (["--threads", threads] if threads else []))
    requeued = False
    if worker.stopped_by() == signal.SIGUSR2 and os.environ.get("SLURM_JOB_ID"):
        # time is nearly up: come back later and go on from the checkpoints
        p = subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], capture_output=True, text=True)
        requeued = p.returncode == 0
        print(f"runner: time limit near, requeue {'done' if requeued else 'failed: ' + p.stderr.strip()}",
              file=sys.stderr, flush=True)
    return {"exit_code": code, "requeued": requeued, "runs": len(mine), "skipped": len(run_dirs) - len(mine)}
