"""``[slurm]`` of the study file: what the batch script of a SLURM launch asks for.

Everything here ends up in a shell script run on the cluster, so every value is checked
against the syntax SLURM gives it (names, durations, sizes, ``--option=value`` flags)
and refused otherwise, at plan time, before anything is submitted: a partition named
``gpu; rm -rf ~`` or a value with a line break never reaches ``sbatch``. submitit then
quotes each value it writes. ``setup`` lines are the one deliberate exception: they are
shell commands (``module load``, activating an environment), run as written, one line each.

Command-line flags of ``runner launch --backend slurm`` override these keys one by one.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

_NAME = (re.compile(r"^[A-Za-z0-9_.\-]+(,[A-Za-z0-9_.\-]+)*$"),
         "not a SLURM name: use letters, digits, '_', '-', '.' (a,b for several)")
_PATTERNS = {  # key: (what SLURM accepts, how to fix it)
    "partition": _NAME, "account": _NAME, "qos": _NAME,
    "constraint": (re.compile(r"^[A-Za-z0-9_.\-:&|,*\[\]()!]+$"),
                   "node features with & | , [ ] * ( ) ! only, no spaces or quotes"),
    "mem": (re.compile(r"^\d+[KMGT]?$"), "a size such as 16G, 4000M or 500 (MB)"),
    "gpu_type": (re.compile(r"^[A-Za-z0-9_.\-]+$"), "a GRES type such as a100 (letters, digits, '_', '-', '.')"),
}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_FLAG = re.compile(r"^--([a-z][a-z0-9\-]*)(?:=([A-Za-z0-9_.,:/@%+=\-\[\]]+))?$")
# flags the launcher sets itself (the array, its logs, the signal and requeue that make resuming work)
_RESERVED = {"array", "output", "error", "signal", "requeue", "no-requeue", "open-mode", "wrap", "job-name"}


class SlurmOptions(BaseModel):
    """The ``[slurm]`` keys; defaults leave each choice to the cluster's own defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = Field("1:00:00", description="per array task: MM, HH:MM:SS or D-HH:MM:SS")
    gpus_per_task: int = Field(0, ge=0, description="GPUs per array task (--gres=gpu:N)")
    gpu_type: str | None = Field(None, description="--gres=gpu:TYPE:N, e.g. a100")
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = Field(None, description="per array task, e.g. 16G or 4000M")
    array_parallelism: int | None = Field(None, ge=1, description="array throttle: at most K tasks at once (%K)")
    constraint: str | None = None
    per_task: int = Field(1, ge=1, description="runs per array task, trained one after another")
    signal_before_s: int = Field(120, ge=10, description="SIGUSR2 this long before the time limit: checkpoint, requeue")
    sbatch: list[str] = Field([], description='extra #SBATCH flags, e.g. ["--mail-type=END"]')
    setup: list[str] = Field([], description="shell lines run before the job (module load, source venv)")

    @field_validator("partition", "account", "qos", "constraint", "mem", "gpu_type")
    @classmethod
    def _pattern(cls, v: str | None, info: ValidationInfo) -> str | None:
        pattern, fix = _PATTERNS[info.field_name]
        if v is not None and not pattern.fullmatch(v):
            raise ValueError(f"{v!r}: {fix}")
        return v

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not _TIME.fullmatch(v) or minutes(v) < 1:
            raise ValueError(f"{v!r}: write minutes (90), HH:MM:SS (1:30:00) or D-HH:MM:SS (2-00:00:00)")
        return v

    @field_validator("sbatch")
    @classmethod
    def _sbatch(cls, v: list[str]) -> list[str]:
        for flag in v:
            m = _FLAG.fullmatch(flag)
            if not m:
                raise ValueError(f"{flag!r}: write each flag as --name or --name=value, with no spaces, quotes or "
                                 "shell characters")
            if m.group(1) in _RESERVED:
                raise ValueError(f"{flag!r}: runner sets --{m.group(1)} itself")
        return v

    @field_validator("setup")
    @classmethod
    def _setup(cls, v: list[str]) -> list[str]:
        for line in v:
            if not line.strip() or any(c in line for c in "\n\r\0"):
                raise ValueError(f"{line!r}: one non-empty shell line per entry")
        return v

    @model_validator(mode="after")
    def _signal_inside_time(self) -> "SlurmOptions":
        if self.signal_before_s >= minutes(self.time) * 60:
            raise ValueError(f"signal_before_s: {self.signal_before_s} s is not inside time = {self.time!r}; "
                             "make it shorter than the time limit")
        return self

    def executor_parameters(self, job_name: str, *, ranks: int = 1, after: list[str] = ()) -> dict[str, Any]:
        """The options as submitit's ``update_parameters`` keywords. ``ranks``: processes of each run
        (``gpus_per_run``): a task gets that many times the GPUs (or CPUs) of one, on one node.
        ``after``: arrays whose tasks must end first (the upstreams of a staged study)."""
        extra: dict[str, Any] = {"requeue": True}  # a requeued task resumes its runs from their checkpoints
        if after:
            extra["dependency"] = "afterany:" + ":".join(after)  # the worker checks the upstream is done
        for flag in self.sbatch:
            m = _FLAG.fullmatch(flag)
            extra[m.group(1).replace("-", "_")] = m.group(2) if m.group(2) is not None else True
        if self.qos:
            extra["qos"] = self.qos
        if self.account:
            extra["account"] = self.account
        params: dict[str, Any] = {
            "name": job_name, "timeout_min": minutes(self.time), "slurm_signal_delay_s": self.signal_before_s,
            "slurm_additional_parameters": extra, "stderr_to_stdout": True,
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.gpus_per_task:
            params["slurm_gres"] = f"gpu:{self.gpu_type + ':' if self.gpu_type else ''}{self.gpus_per_task * ranks}"
        if self.cpus_per_task or ranks > 1:
            params["cpus_per_task"] = (self.cpus_per_task or 1) * ranks
        if self.mem:
            params["slurm_mem"] = self.mem
        if self.constraint:
            params["slurm_constraint"] = self.constraint
        if self.array_parallelism:
            params["slurm_array_parallelism"] = self.array_parallelism
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        return params


def minutes(text: str) -> int:
    """SLURM's time formats in whole minutes, rounded up as SLURM does: MM, MM:SS, HH:MM:SS,
    D-HH, D-HH:MM, D-HH:MM:SS."""
    m = _TIME.fullmatch(text)
    if not m:
        return 0
    days, a, b, c = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + a * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = a * 60 + int(b)
    else:  # MM
        seconds = a * 60
    return math.ceil(seconds / 60)
