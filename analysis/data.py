"""The report's input: every planned run of the selection, with what the store knows of it.

Planned runs, not stored ones, are the rows: a cell nobody has run yet still has a
place in every table (as "—"), and runs the study no longer declares stay out.
Read through the store's public functions only; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from runner.commands import Selection, store_for
from runner.plan.expand import Run, axes_of, matches, value_of
from runner.plan.stages import effective_states, with_upstreams
from runner.records.provenance import git_commit

FINISHED = ("done", "stale")  # stale: done, at another git commit than HEAD


@dataclass(frozen=True)
class RunView:
    run: Run
    state: str  # the plan's view: done, stale, running, queued, failed, lost, cancelled, missing
    summary: dict[str, Any] | None
    finished_at: float | None
    git_commit: str | None
    hardware: tuple[str, ...]  # GPU models (or "cpu") its attempts ran on

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
    selection: Selection
    runs: list[RunView]
    commit: str | None
    store: Any = None  # runner.records.store.Store, or None before anything ran
    _series: dict = field(default_factory=dict)

    @property
    def study(self):
        return self.selection.study

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


def collect(sel: Selection) -> ReportData:
    """Ingest the run folders, then pair each selected run with its record."""
    store = store_for(sel.study, ingest=True)
    ids = [r.id for r in with_upstreams(sel.runs, sel.plan.by_id())]
    records = store.runs(ids, progress=False) if store is not None else {}
    hardware = store.hardware() if store is not None and records else {}
    commit = git_commit(sel.study.dir)
    states, _ = effective_states(sel.runs, records, commit, sel.plan.by_id())
    views = []
    for run in sel.runs:
        rec = records.get(run.id)
        views.append(RunView(run, states[run.id], rec.summary if rec else None,
                             rec.finished_at if rec else None, rec.git_commit if rec else None,
                             hardware.get(run.id, ())))
    return ReportData(sel, views, commit, store)
