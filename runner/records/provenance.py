"""Where a result came from: code version, command, machine, libraries.

``git_info`` and ``host_info`` are torch-free (the launcher and ``plan`` use them);
``torch_info`` runs in workers, which have torch imported anyway.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

COMMAND_ENV = "RUNNER_COMMAND"  # the user's command line, handed from the launcher to its workers


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode(errors="replace")


def git_commit(path: Path) -> str | None:
    """HEAD of the repository holding ``path`` (None outside one): what decides whether a run is stale."""
    commit = _git(path, "rev-parse", "HEAD")
    return commit.strip() if commit else None


def git_info(path: Path) -> dict:
    """Commit, dirty flag and a hash of the uncommitted diff of the repository holding ``path``.

    Outside a repository every field is None (and no run is ever called stale)."""
    commit = git_commit(path)
    if commit is None:
        return {"commit": None, "dirty": None, "diff_hash": None}
    status = _git(path, "status", "--porcelain", "--untracked-files=no") or ""
    diff = (_git(path, "diff", "HEAD", "--binary") or "") if status.strip() else ""
    return {
        "commit": commit,
        "dirty": bool(status.strip()),
        "diff_hash": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


def command_line() -> str:
    """The command the user typed (a worker reports its launcher's)."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    program = Path(sys.argv[0]).name
    prefix = ["python", "-m", "runner"] if program == "__main__.py" else [program]
    return shlex.join([*prefix, *sys.argv[1:]])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def slurm_info() -> dict:
    return {
        "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }


def torch_info(device: str) -> dict:
    import torch

    try:
        import timm

        timm_version = timm.__version__
    except ImportError:
        timm_version = None
    info = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "timm": timm_version,
        "gpu_model": None,
        "gpu_count": 0,
        "gpu_mem_mb": None,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu_model=props.name, gpu_count=torch.cuda.device_count(), gpu_mem_mb=props.total_memory / 2**20)
    return info


def collect(study_dir: Path, device: str) -> dict:
    """Everything an attempt records about where it ran: the study's repository (``git``), the
    code's (``code_git``, the same one when the study lives beside the code) and the code
    fingerprint that decides staleness (``runner/records/fingerprint.py``)."""
    from runner.records.fingerprint import CODE_ROOT, current

    return {
        "git": git_info(study_dir),
        "code": current().as_json(),
        "code_git": git_info(CODE_ROOT),
        "command": command_line(),
        "host": host_info(),
        "torch": torch_info(device),
        "slurm": slurm_info(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
