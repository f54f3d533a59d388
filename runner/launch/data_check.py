"""Which datasets of a set of runs are not on disk, checked before anything is launched (torch-free):
``runner plan`` warns, ``launch`` and ``tune`` refuse, each with the dataset's one-line problem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import datasets

from runner.plan.identity import canonical_json
from runner.plan.runs import Run


@dataclass(frozen=True)
class MissingData:
    dataset: str  # the study's name for it
    problem: str  # one line: path, layout expected, how to get it
    runs: int


def missing_data(runs: Iterable[Run]) -> list[MissingData]:
    """Datasets of these runs whose files are not in place, each checked once (torch-free)."""
    checked: dict[str, str | None] = {}
    counts: dict[tuple[str, str], int] = {}
    for run in runs:
        key = canonical_json(run.config["dataset"])
        if key not in checked:
            options = dict(run.config["dataset"])
            checked[key] = datasets.data_problem(options.pop("source"), **options)
        if checked[key] is not None:
            counts[(run.dataset, checked[key])] = counts.get((run.dataset, checked[key]), 0) + 1
    return [MissingData(name, problem, n) for (name, problem), n in counts.items()]
