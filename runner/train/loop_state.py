"""The training loop's state: what its steps share (``Run``: the model and its optimizer, the
batches, the counters), the counters alone (``Progress``: all a checkpoint needs besides the
state dicts and RNG states), and the per-step statistics read back from the device in batches."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from runner.study.recipe import Recipe
from runner.train.distributed import Ranks
from runner.train.engine import Engine
from runner.train.optim import WeightEma


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Progress:
    """The loop's counters: with the state dicts and RNG states, all a checkpoint needs."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches done of the epoch in progress
    step: int = 0  # optimizer steps done
    best: float | None = None  # best value of the recipe's monitor
    best_epoch: int = 0
    best_val_acc: float = -1.0
    bad_evals: int = 0  # validations in a row without improvement (patience)
    stopped_by: str | None = None  # epochs, max_steps, early_stop, time_budget
    elapsed_s: float = 0.0  # wall time in the loop over all attempts (the time budget)
    train_time_s: float = 0.0
    images: int = 0
    peak_mb: float = 0.0
    last: dict = field(default_factory=dict)  # metrics of the last finished epoch (validated: it was the last)
    # the epoch in progress
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    epoch_train_s: float = 0.0


class StepStats:
    """Per-step loss and correct counts stay on the device and are read back every ``every`` steps
    (every step on CPU, where a read costs nothing), so a CUDA step does not wait for the host.
    A NaN or infinite loss is caught at the next read, with the step it happened at."""

    def __init__(self, every: int):
        self.every, self.pending = every, []

    def add(self, p: Progress, epoch: int, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.pending.append((p.step, loss, correct, n))
        if len(self.pending) >= self.every:
            self.flush(p, epoch)

    def flush(self, p: Progress, epoch: int) -> None:
        if not self.pending:
            return
        if len(self.pending) == 1:  # reading every step (CPU): no stacking
            losses, corrects = [self.pending[0][1].item()], [self.pending[0][2].item()]
        else:
            losses = torch.stack([t[1] for t in self.pending]).float().tolist()
            corrects = torch.stack([t[2] for t in self.pending]).tolist()
        for (step, _, _, n), loss, correct in zip(self.pending, losses, corrects):
            if not math.isfinite(loss):
                self.pending.clear()
                raise Diverged(f"diverged at epoch {epoch} step {step}: training loss is {loss}")
            p.loss_sum, p.correct, p.seen = p.loss_sum + loss * n, p.correct + int(correct), p.seen + n
        self.pending.clear()


@dataclass
class Data:
    """The batches of a run's three splits (this rank's share of each), and what the loop needs of the dataset."""

    train: Any  # shuffled and augmented by (seed, epoch); resumable mid-epoch (datasets/batches.py)
    val: Any
    test: Any
    info: Any  # datasets.DatasetInfo: classes, channels, image size
    sizes: dict[str, int]  # n_train, n_val, n_test: images of each whole split
    mixer: Callable | None  # Mixup/CutMix of a training batch; None when off


@dataclass
class Run:
    """One run in training: what the steps of ``runner/train/loop.py`` share.

    ``model`` holds the weights and is what the optimizer steps; ``wrapped`` is it inside
    DistributedDataParallel in a distributed run (else ``model`` itself), and ``forward`` is
    ``wrapped``, compiled when the engine says so: it shares ``model``'s parameters.
    """

    recipe: Recipe
    device: torch.device
    ranks: Ranks
    data: Data
    engine: Engine
    model: nn.Module
    wrapped: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    ema: WeightEma | None
    scaler: torch.amp.GradScaler | None  # fp16 only
    steps_per_epoch: int
    total_steps: int  # of the schedule: every epoch's steps, or max_steps when fewer
    warmup_steps: int
    check_every: int  # optimizer steps between reads of the device (losses, stop requests of a distributed run)
    stats: StepStats
    frozen: int  # parameters frozen by the recipe
    fresh_head: list[str]  # parameters not taken from the upstream run (a head of another shape)
    p: Progress = field(default_factory=Progress)
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the weights best on the monitor
    clock: tuple[float, float] = (0.0, 0.0)  # this attempt's start (perf_counter), elapsed_s of the attempts before

    @property
    def weights(self) -> nn.Module:
        """Whose weights are selected, tested and saved: the EMA's if the recipe keeps one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def evaluated(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """What validation and test call: ``weights``, through ``forward`` when alone (never the DDP
        wrapper: evaluation has no gradients to share)."""
        return self.ema.module if self.ema is not None else (self.forward if self.ranks.world == 1 else self.model)

    @property
    def buffered(self) -> tuple[nn.Module, ...]:
        """The modules whose buffers (BatchNorm statistics) take rank 0's values before an evaluation."""
        return (self.model, self.ema.module) if self.ema is not None else (self.model,)

    def start_clock(self) -> None:
        self.clock = (time.perf_counter(), self.p.elapsed_s)

    def elapsed(self) -> float:
        """Wall time in the loop over every attempt of the run."""
        t0, before = self.clock
        return before + time.perf_counter() - t0

    def over(self, epochs_done: int) -> bool:
        """Whether training is over after ``epochs_done`` epochs; an end by count (epochs, max_steps)
        is noted in ``p.stopped_by`` here, the others where they happen."""
        p = self.p
        if p.stopped_by is None and (epochs_done >= self.recipe.epochs or p.step >= self.total_steps):
            p.stopped_by = "epochs" if epochs_done >= self.recipe.epochs else "max_steps"
        return p.stopped_by is not None

    def stop_now(self, should_stop: Callable[[], bool]) -> bool:
        """A stop request: alone, asked before every step; distributed, every rank agrees at the same steps."""
        if self.ranks.world == 1:
            return should_stop()
        return self.p.batch % self.check_every == 0 and self.ranks.any(should_stop(), self.device)

    def over_budget(self) -> bool:
        """The recipe's time budget is spent (all ranks agree, at the same steps)."""
        budget = self.recipe.time_budget_min
        hit = budget is not None and self.elapsed() >= 60 * budget
        if self.ranks.world == 1 or budget is None:
            return hit
        return self.p.batch % self.check_every == 0 and self.ranks.any(hit, self.device)
