"""The training loop's state: its counters (all a checkpoint needs besides the state dicts and
RNG states) and the per-step statistics read back from the device in batches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


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
