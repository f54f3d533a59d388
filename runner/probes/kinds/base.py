"""What a probe kind is made of: its settings schema, its compute function, the results it records.

Torch-free: ``runner plan`` validates ``[[probe]]`` blocks against these schemas, so a kind's
module imports torch (and whatever imports torch) inside its compute function only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict

# (model, resolved run config, settings, torch device, study folder) -> (summary, arrays): the summary
# goes into the probe's result.json and the store, the arrays into its arrays.npz (what figures read)
Compute = Callable[[Any, dict, dict, Any, Path], tuple[dict, dict]]


class Settings(BaseModel):
    """A kind's keys of a ``[[probe]]`` block, beside ``name``, ``kind`` and ``match``. What they
    dump to is what a result depends on: its hash keys the result (runner/study/probes.py), so
    renaming a field or changing a default re-probes every run."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


@dataclass(frozen=True)
class ProbeKind:
    name: str  # the ``kind = "..."`` of a block
    settings: type[Settings]
    compute: Compute
    results: tuple[str, ...]  # the summary keys every result holds (what the kind's report table reads)
    attention_only: bool = False  # runs of families known to have no attention layer are skipped
    # (study, probe, tasks) -> None: refuses, as a SpecError, what is wrong before any worker starts;
    # called once with no tasks (the block alone), then with the tasks of the runs to probe
    check: Optional[Callable[[Any, Any, list], None]] = None
