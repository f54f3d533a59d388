"""The training loop: one run, read top to bottom.

seed -> data -> model -> engine (precision, compile, channels_last, fused optimizer, data
path) -> optimizer, schedule, EMA -> resume from the run's checkpoint if it has one ->
epochs of optimizer steps, validation every ``eval_every`` epochs, checkpoints every
``checkpoint_every`` -> test of the best and of the last weights -> cost figures -> summary.

The worker owns the run folder: this module is told where the checkpoint and the final
weights go, calls back with the resolved engine and each epoch's metrics, and returns the
summary, so it can be used on its own.

Stopping: ``should_stop`` (SIGTERM or SIGUSR1 in the worker) is polled before every
optimizer step; the loop then checkpoints where it is, mid-epoch, and raises
``Interrupted``. A checkpoint holds the weights, the optimizer, scaler and EMA, the loop's
counters and every RNG state, and the batches resume where they stopped, so a resumed run
ends with the weights it would have had without the interruption.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from architectures import create_model
from datasets import SPLITS, build_dataset
from datasets.batches import make_batches, make_mixer

from . import checkpoint as ckpt
from .engine import Engine, resolve_engine
from .measure import INFER_BATCH, count_flops, count_params, inference_speed, peak_memory_mb, reset_peak_memory
from .optim import WeightEma, lr_at, make_optimizer
from .recipe import Recipe

EVAL_BATCH = 512
SYNC_EVERY_CUDA = 16  # optimizer steps between reads of the loss on CUDA (a read waits for the GPU)


class Interrupted(Exception):
    """The worker was asked to stop (SIGTERM, SIGUSR1, Ctrl-C of the launcher): not a failure of the run.
    The run checkpointed first, so it resumes where it stopped."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ---------------------------------------------------------------- loop state


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


@torch.no_grad()
def evaluate(model: nn.Module, batches, engine: Engine) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split."""
    model.eval()
    dev = torch.device(engine.device)
    loss_sum, correct, n = torch.zeros((), device=dev), torch.zeros((), device=dev, dtype=torch.long), 0
    for x, y in batches:
        x = x.to(dev, non_blocking=True).contiguous(memory_format=engine.memory_format)
        y = y.to(dev, non_blocking=True)
        with engine.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    return loss_sum.item() / max(n, 1), correct.item() / max(n, 1)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---------------------------------------------------------------- the run


def load_split(dataset: dict, split: str):
    """``(dataset, DatasetInfo)`` of one split of a resolved ``dataset`` section."""
    opts = dict(dataset)
    return build_dataset(opts.pop("source"), root=opts.pop("root", None), split=split, **opts)


def build_model(architecture: dict, info) -> nn.Module:
    """The model of a resolved ``architecture`` section, shaped by the dataset (classes, channels, size)."""
    arch = dict(architecture)
    arch.pop("in_chans", None)  # a family's optional in_chans was checked against the dataset at plan time
    return create_model(arch.pop("model"), num_classes=info.num_classes, in_chans=info.in_chans,
                        img_size=info.img_size, **arch)


def train(config: dict, *, device: str = "cpu", checkpoint: Path | None = None, weights: Path | None = None,
          on_engine: Callable[[dict], None] = lambda e: None,
          on_epoch: Callable[[int, int, dict], None] = lambda *a: None,
          should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Train one resolved config (resuming from ``checkpoint`` if it exists); return its summary."""
    r = Recipe(**config["train"])
    dev = torch.device(device)
    seed_everything(config["seed"])
    reset_peak_memory(dev)

    # data: the split is fixed by the dataset; the order of batches and the augmentation by (seed, epoch)
    splits = {s: load_split(config["dataset"], s) for s in SPLITS}
    info = splits["train"][1]
    train_batches = make_batches(splits["train"][0], r.batch_size, dev, shuffle=True, seed=config["seed"],
                                 augmentation=r.augmentation(), path=r.data_path)
    eval_path = "loader" if r.data_path == "loader" else "auto"
    val_batches = make_batches(splits["val"][0], EVAL_BATCH, dev, shuffle=False, path=eval_path)
    test_batches = make_batches(splits["test"][0], EVAL_BATCH, dev, shuffle=False, path=eval_path)
    sizes = {f"n_{s}": len(splits[s][0]) for s in SPLITS}
    mixer = make_mixer(r.mixup, r.cutmix, r.mix_prob, r.mix_switch_prob, r.label_smoothing, info.num_classes)

    # model and engine
    model = build_model(config["architecture"], info).to(dev)
    engine = resolve_engine(r, dev, model, train_batches.path)
    model = model.to(memory_format=engine.memory_format)
    forward = torch.compile(model) if engine.compile else model  # shares the parameters of ``model``

    # optimizer, per-step schedule, EMA, loss scaling (fp16 only)
    opt = make_optimizer(model, r, fused=engine.fused)
    ema = WeightEma(model, r.ema_decay) if r.ema_decay else None
    scaler = torch.amp.GradScaler(dev.type) if engine.precision == "fp16" else None
    steps_per_epoch = len(train_batches)
    total_steps = min(r.epochs * steps_per_epoch, r.max_steps or math.inf)
    warmup_steps = round(r.warmup_epochs * steps_per_epoch)
    evaluated = ema.module if ema is not None else forward  # what validation, test and model.pt see

    # resume
    p, best_state = Progress(), None
    saved = ckpt.load(checkpoint) if checkpoint is not None else None
    if saved is not None:
        p = Progress(**saved["progress"])
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if scaler is not None and saved["scaler"] is not None:
            scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        best_state = saved["best_state"] or ckpt.cpu_state(ema.module if ema is not None else model)
        ckpt.set_rng_state(saved["rng"])
        del saved
        on_engine({**asdict(engine), "resumed_from": {"epoch": p.epoch, "batch": p.batch, "step": p.step}})
    else:
        on_engine({**asdict(engine), "resumed_from": None})

    attempt_t0, attempt_base = time.perf_counter(), p.elapsed_s

    def elapsed() -> float:
        return attempt_base + time.perf_counter() - attempt_t0

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        p.elapsed_s = elapsed()
        best_is_current = p.best_epoch == p.epoch and p.batch == 0  # saved right after the epoch that set it
        ckpt.save(checkpoint, {
            "progress": asdict(p), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "best_state": None if best_is_current else best_state, "rng": ckpt.rng_state(),
        })

    def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():  # Mixup/CutMix soft targets, label smoothing folded in
            return F.cross_entropy(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=r.label_smoothing)

    def optimizer_step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over a batch, in ``accum_steps`` micro-batches; (mean loss, correct)."""
        target = y
        if mixer is not None:  # accuracy is counted against the unmixed labels
            x, target = mixer(x, y)
        x = x.contiguous(memory_format=engine.memory_format)
        opt.zero_grad(set_to_none=True)
        losses, corrects = [], []
        for xc, tc, yc in zip(x.split(r.micro_batch), target.split(r.micro_batch), y.split(r.micro_batch)):
            with engine.autocast():
                logits = forward(xc)
                loss = criterion(logits, tc)
            weighted = loss if len(yc) == len(y) else loss * (len(yc) / len(y))
            (scaler.scale(weighted) if scaler is not None else weighted).backward()
            losses.append(weighted.detach())
            corrects.append((logits.detach().argmax(1) == yc).sum())
        if r.grad_clip is not None:
            if scaler is not None:
                scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if ema is not None:
            ema.update(model)
        if len(losses) == 1:
            return losses[0], corrects[0]
        return torch.stack(losses).sum(), torch.stack(corrects).sum()

    # epochs
    stats = StepStats(SYNC_EVERY_CUDA if dev.type == "cuda" else 1)
    while p.stopped_by is None:
        if p.epoch >= r.epochs or p.step >= total_steps:  # resumed from the checkpoint of a finished loop
            p.stopped_by = "epochs" if p.epoch >= r.epochs else "max_steps"
            break
        epoch = p.epoch + 1
        if p.batch == 0:
            reset_peak_memory(dev)
        model.train()
        train_batches.set_epoch(epoch, start=p.batch)
        segment_t0 = time.perf_counter()
        for x, y in train_batches:
            if should_stop():
                stats.flush(p, epoch)
                sync(dev)
                p.epoch_train_s += time.perf_counter() - segment_t0
                save_checkpoint()
                raise Interrupted()
            p.batch += 1
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if mixer is not None and len(y) % 2:  # mixing pairs images: drop the odd one of a last batch
                x, y = x[:-1], y[:-1]
            if len(y) == 0:
                continue
            for group in opt.param_groups:
                group["lr"] = lr_at(p.step, r, total_steps=total_steps, warmup_steps=warmup_steps,
                                    steps_per_epoch=steps_per_epoch)
            loss, correct = optimizer_step(x, y)
            p.step += 1
            stats.add(p, epoch, loss, correct, len(y))
            if p.step >= total_steps:
                break
            if r.time_budget_min is not None and elapsed() >= 60 * r.time_budget_min:
                p.stopped_by = "time_budget"
                break
        stats.flush(p, epoch)
        sync(dev)
        p.epoch_train_s += time.perf_counter() - segment_t0

        # the epoch's numbers, validation when due (always after the last epoch)
        if p.stopped_by is None and (epoch >= r.epochs or p.step >= total_steps):
            p.stopped_by = "epochs" if epoch >= r.epochs else "max_steps"
        last = p.stopped_by is not None
        metrics = {"train_loss": p.loss_sum / max(p.seen, 1), "train_acc": p.correct / max(p.seen, 1),
                   "lr": opt.param_groups[0]["lr"], "train_images_per_s": p.seen / max(p.epoch_train_s, 1e-9)}
        val_t0 = time.perf_counter()
        if epoch % r.eval_every == 0 or last:
            val_loss, val_acc = evaluate(evaluated, val_batches, engine)
            metrics.update(val_loss=val_loss, val_acc=val_acc)
            p.best_val_acc = max(p.best_val_acc, val_acc)
            value = metrics[r.monitor]
            sign = 1.0 if r.monitor == "val_acc" else -1.0
            if p.best is None or sign * (value - p.best) > r.min_delta:
                p.best, p.best_epoch, p.bad_evals = value, epoch, 0
                best_state = ckpt.cpu_state(ema.module if ema is not None else model)
            else:
                p.bad_evals += 1
                if r.patience is not None and p.bad_evals >= r.patience and p.stopped_by is None:
                    p.stopped_by = "early_stop"
        peak_mb, _ = peak_memory_mb(dev)
        metrics.update(epoch_time_s=p.epoch_train_s + time.perf_counter() - val_t0, peak_mem_mb=peak_mb)
        p.train_time_s += p.epoch_train_s
        p.images += p.seen
        p.peak_mb = max(p.peak_mb, peak_mb)
        p.epoch, p.batch, p.loss_sum, p.correct, p.seen, p.epoch_train_s = epoch, 0, 0.0, 0, 0, 0.0
        p.last = metrics
        on_epoch(epoch, p.step, metrics)
        if (engine.checkpoint_every and epoch % engine.checkpoint_every == 0) or last:
            save_checkpoint()

    # test the last weights, then the best (on the monitor); the recipe picks the reported pair
    last_loss, last_acc = evaluate(evaluated, test_batches, engine)
    eval_module = ema.module if ema is not None else model
    last_state = ckpt.cpu_state(eval_module)
    eval_module.load_state_dict(best_state)
    best_loss, best_acc = evaluate(evaluated, test_batches, engine)
    chosen = best_state if r.select == "best" else last_state
    eval_module.load_state_dict(chosen)
    if weights is not None:
        ckpt.save_atomic(weights, chosen)

    # cost figures of the eager module, in the run's precision and memory format
    sample_shape = (info.in_chans, info.img_size, info.img_size)
    infer_ips, infer_ms = inference_speed(eval_module, sample_shape, dev, engine.autocast, engine.memory_format)
    peak_mb, peak_kind = peak_memory_mb(dev)
    test_loss, test_acc = (best_loss, best_acc) if r.select == "best" else (last_loss, last_acc)
    return {
        "test_acc": test_acc, "test_loss": test_loss,
        "test_acc_best": best_acc, "test_loss_best": best_loss, "test_acc_last": last_acc, "test_loss_last": last_loss,
        "best_val_acc": p.best_val_acc, "best_epoch": p.best_epoch, "monitor": r.monitor, "best_monitor": p.best,
        "val_acc": p.last["val_acc"], "val_loss": p.last["val_loss"],
        "train_acc": p.last["train_acc"], "train_loss": p.last["train_loss"],
        "epochs": p.epoch, "steps": p.step, "stopped_by": p.stopped_by, "params": count_params(model),
        "flops": count_flops(eval_module, torch.randn(1, *sample_shape, device=dev)),
        "train_time_s": p.train_time_s, "train_images_per_s": p.images / max(p.train_time_s, 1e-9),
        "infer_images_per_s": infer_ips, "infer_latency_ms": infer_ms, "infer_batch_size": INFER_BATCH,
        "peak_mem_mb": max(p.peak_mb, peak_mb), "peak_mem_kind": peak_kind, "device": str(dev),
        "data_path": engine.data_path, "precision": engine.precision,
        **sizes,
    }
