"""What expansion produces: the runs of a study (``Run``) and the whole set of them (``Plan``).

Kept apart from the code that makes them, so every reader of runs (selection, stages, the
launcher, the tuner) depends on these two frozen types and not on expansion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runner.study.spec import Study


@dataclass(frozen=True)
class Run:
    id: str
    cell: str
    label: str
    architecture: str  # the study's name for it, e.g. "vit"
    dataset: str
    seed: int
    matrices: tuple[str, ...]
    config: dict[str, Any]
    upstream: str | None = None  # the run whose weights it starts from (init = "run:..."), runner/plan/stages.py
    # (section, key) -> the block that set it ("[[override]] #1 set"), for `runner plan --explain`
    origins: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Plan:
    study: Study
    runs: tuple[Run, ...]

    def by_id(self) -> dict[str, Run]:
        return {r.id: r for r in self.runs}
