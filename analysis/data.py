"""The report's input: every planned run of the selection, with what the store knows of it.

Planned runs, not stored ones, are the rows: a cell nobody has run yet still has a
place in every table (as "—"), and runs the study no longer declares stay out.
``runner.commands.report_data`` gathers it (it opens the store, reads the records, decides each
run's state against HEAD); analysis only reads what it is given, and logged series through the
store's public read functions. No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from runner.states import FINISHED
from runner.study.selectors import axes_of, matches, value_of
from runner.study.spec import Study


@dataclass(frozen=True)
class RunView:
    run: Any  # a runner.plan.runs.Run: its id, cell, label, seed, axes and resolved config
    state: str  # the plan's view: done, stale, running, queued, failed, lost, cancelled, missing
    summary: dict[str, Any] | None
    finished_at: float | None
    git_commit: str | None
    hardware: tuple[str, ...]  # GPU models (or "cpu") its attempts ran on
    reason: str | None = None  # why it is stale (what changed since it trained)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def cell_label(self) -> str:
        """The label without its seed: ``vit/cifar10/depth=6``."""
        return self.run.label.removesuffix(f"/s{self.run.seed}")

    def metric(self, name: str) -> float | None:
        """A finished run's summary metric, if it is a finite number."""
        v = (self.summary or {}).get(name) if self.finished else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    def value(self, key: str) -> Any:
        return self.cell_label if key == "cell" else value_of(self.run, key)


@dataclass
class ReportData:
    study: Study
    runs: list[RunView]
    commit: str | None  # HEAD of the study's repository (shown in the page; staleness is decided before)
    store: Any = None  # runner.records.store.Store, or None before anything ran
    _series: dict = field(default_factory=dict)

    def where(self, rule: dict[str, Any]) -> list[RunView]:
        """The selected runs a table's or figure's ``where`` keeps."""
        return [v for v in self.runs if matches(axes_of(v.run), v.run.config, rule)] if rule else self.runs

    def series(self, runs: list[RunView], name: str) -> dict[str, tuple[list[int], list[float]]]:
        """Per run id, the (epochs, values) of one logged metric."""
        ids = [v.run.id for v in runs if (v.run.id, name) not in self._series]
        if ids and self.store is not None:
            got: dict[str, tuple[list, list]] = {i: ([], []) for i in ids}
            for rid, epoch, value in zip(*self.store.series(ids, name)):
                if value is not None and math.isfinite(value):
                    got[rid][0].append(epoch), got[rid][1].append(value)
            self._series.update({(i, name): s for i, s in got.items()})
        return {v.run.id: self._series.get((v.run.id, name), ([], [])) for v in runs}

