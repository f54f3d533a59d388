"""Optional Weights & Biases mirror of a run, written by the worker.

Configured by ``[study.wandb]`` (project, entity, mode, tags) and carried to workers in
run.json. Each run is one W&B run (its id is the run id, so attempts resume it), grouped
by cell so the seeds of a cell sit together; it gets the resolved config, the attempt's
provenance and engine as its config, every epoch's metrics, and the summary.

W&B is a mirror, never the record: the run folder is. An error inside wandb (no network,
no login) is reported once on stderr and training goes on without it. ``mode`` defaults
to "offline", which needs no account; ``wandb sync`` uploads later.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from runner.records.summary import Summary
from runner.states import State


class WandbMirror:
    def __init__(self, settings: dict | None, run: dict, provenance: dict, folder: Path):
        self.wandb_run = None
        if not settings:
            return
        try:
            import wandb

            self.wandb_run = wandb.init(
                project=settings["project"], entity=settings.get("entity"), mode=settings.get("mode", "offline"),
                tags=settings.get("tags") or None, group=run["cell"], name=run["label"], id=run["id"],
                resume="allow", dir=str(folder), reinit="finish_previous",
                config={"config": run["config"], "run": {k: run.get(k) for k in ("id", "cell", "label", "matrices",
                                                                                   "study", "architecture", "dataset",
                                                                                   "seed")},
                        "provenance": provenance})
        except Exception as e:  # noqa: BLE001 - a logging mirror must not fail a training run
            self._give_up(e)

    def _give_up(self, e: Exception) -> None:
        print(f"wandb: {type(e).__name__}: {e}; training goes on without W&B", file=sys.stderr)
        self.wandb_run = None

    def _call(self, fn, *args: Any, **kwargs: Any) -> None:
        if self.wandb_run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._give_up(e)

    def engine(self, engine: dict) -> None:
        if self.wandb_run is not None:
            self._call(self.wandb_run.config.update, {"engine": engine}, allow_val_change=True)

    def epoch(self, epoch: int, step: int, metrics: dict) -> None:
        if self.wandb_run is not None:
            self._call(self.wandb_run.log, {**metrics, "epoch": epoch}, step=step)

    def finish(self, state: State, summary: Summary | None = None, reason: str | None = None) -> None:
        if self.wandb_run is None:
            return
        if summary:
            self._call(self.wandb_run.summary.update, {k: v for k, v in summary.items() if v is not None})
        if reason:
            self._call(self.wandb_run.summary.update, {"failure": reason})
        self._call(self.wandb_run.finish, exit_code=0 if state == State.DONE else 1)
        self.wandb_run = None
