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
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from architectures import create_model
from datasets import SPLITS, build_dataset
from datasets.batches import make_batches, make_mixer, trained_shares

from runner.train import checkpoint as ckpt
from runner.train import finetune
from runner.train.distributed import Ranks
from runner.train.loop_state import Diverged, Progress, StepStats  # noqa: F401  (callers catch train.Diverged)
from runner.train.engine import Engine, resolve_engine
from runner.train.measure import INFER_BATCH, count_flops, count_params, inference_speed, peak_memory_mb, reset_peak_memory
from runner.train.optim import WeightEma, lr_at, make_optimizer, set_lr
from runner.study.recipe import Recipe

EVAL_BATCH = 512
SOLO = Ranks()  # a run in one process
SYNC_EVERY_CUDA = 16  # optimizer steps between reads of the loss on CUDA (a read waits for the GPU)


class Interrupted(Exception):
    """The worker was asked to stop (SIGTERM, SIGUSR1, Ctrl-C of the launcher): not a failure of the run.
    The run checkpointed first, so it resumes where it stopped."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@torch.no_grad()
def evaluate(model: nn.Module, batches, engine: Engine, ranks: Ranks = SOLO) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split (its parts summed over the ranks of a distributed run)."""
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
    total_loss, total_correct, total = ranks.sums([loss_sum.item(), float(correct.item()), float(n)], dev)
    return total_loss / max(total, 1), total_correct / max(total, 1)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---------------------------------------------------------------- the run


def load_split(dataset: dict, split: str):
    """``(dataset, DatasetInfo)`` of one split of a resolved ``dataset`` section."""
    opts = dict(dataset)
    return build_dataset(opts.pop("source"), root=opts.pop("root", None), split=split, **opts)


def build_model(architecture: dict, info, *, pretrained: bool = False) -> nn.Module:
    """The model of a resolved ``architecture`` section, shaped by the dataset (classes, channels, size);
    ``pretrained``: timm's weights (``init = "pretrained"``; plan time allows it for timm models only)."""
    arch = dict(architecture) | ({"pretrained": True} if pretrained else {})
    arch.pop("in_chans", None)  # a family's optional in_chans was checked against the dataset at plan time
    return create_model(arch.pop("model"), num_classes=info.num_classes, in_chans=info.in_chans,
                        img_size=info.img_size, **arch)


def train(config: dict, *, device: str = "cpu", checkpoint: Path | None = None, weights: Path | None = None,
          upstream: Path | None = None, ranks: Ranks = SOLO,
          on_engine: Callable[[dict], None] = lambda e: None,
          on_epoch: Callable[[int, int, dict], None] = lambda *a: None,
          should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Train one resolved config (resuming from ``checkpoint`` if it exists); return its summary.
    ``upstream``: the weights ``init = "run:..."`` starts from. ``ranks``: this process's place in a
    distributed run (``runner/train/distributed.py``); ranks other than 0 write nothing and return {}."""
    r = Recipe(**config["train"])
    dev = torch.device(device)
    seed_everything(config["seed"])
    reset_peak_memory(dev)
    shard = (ranks.rank, ranks.world)

    # data: the split is fixed by the dataset; the order of batches and the augmentation by (seed, epoch)
    splits = {s: load_split(config["dataset"], s) for s in SPLITS}
    info = splits["train"][1]
    train_batches = make_batches(splits["train"][0], r.batch_size, dev, shuffle=True, seed=config["seed"],
                                 augmentation=r.augmentation(), path=r.data_path, shard=shard)
    eval_path = "loader" if r.data_path == "loader" else "auto"
    val_batches = make_batches(splits["val"][0], EVAL_BATCH, dev, shuffle=False, path=eval_path, shard=shard)
    test_batches = make_batches(splits["test"][0], EVAL_BATCH, dev, shuffle=False, path=eval_path, shard=shard)
    sizes = {f"n_{s}": len(splits[s][0]) for s in SPLITS}
    mixer = make_mixer(r.mixup, r.cutmix, r.mix_prob, r.mix_switch_prob, r.label_smoothing, info.num_classes)

    # model (from scratch, pretrained, or an upstream run's weights unless resuming), what trains, engine
    saved = ckpt.load(checkpoint) if checkpoint is not None else None
    model = build_model(config["architecture"], info, pretrained=r.init == "pretrained" and saved is None).to(dev)
    fresh_head = finetune.load_upstream(model, upstream, r.init[4:]) if upstream is not None and saved is None else []
    frozen = finetune.freeze(model, r.freeze)
    if ranks.rank:  # dropout and other randomness of the model differ between ranks; rank 0 draws as alone
        torch.manual_seed(config["seed"] + 1_000_003 * ranks.rank)
    engine = resolve_engine(r, dev, model, train_batches.path)
    model = model.to(memory_format=engine.memory_format)
    wrapped = model if ranks.world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev] if dev.type == "cuda" else None)
    forward = torch.compile(wrapped) if engine.compile else wrapped  # shares the parameters of ``model``

    # optimizer (the head at head_lr), per-step schedule, EMA, loss scaling (fp16 only)
    head = finetune.head_parameters(model) if r.head_lr is not None else set()
    opt = make_optimizer(model, r, fused=engine.fused, head=head)
    ema = WeightEma(model, r.ema_decay) if r.ema_decay else None
    scaler = torch.amp.GradScaler(dev.type) if engine.precision == "fp16" else None
    steps_per_epoch = len(train_batches)
    total_steps = min(r.epochs * steps_per_epoch, r.max_steps or math.inf)
    warmup_steps = round(r.warmup_epochs * steps_per_epoch)
    # what validation, test and model.pt see (never the DDP wrapper: evaluation has no gradients to share)
    evaluated = ema.module if ema is not None else (forward if ranks.world == 1 else model)
    n_train = len(splits["train"][0])
    buffered = (model, ema.module) if ema is not None else (model,)  # rank 0's BatchNorm statistics before evaluating

    # resume
    p, best_state = Progress(), None
    if saved is not None:
        p = Progress(**saved["progress"])
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if scaler is not None and saved["scaler"] is not None:
            scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        best_state = saved["best_state"] or ckpt.cpu_state(ema.module if ema is not None else model)
        shares = saved.get("ranks") or []
        mine = shares[ranks.rank] if ranks.world > 1 and len(shares) == ranks.world else None
        ckpt.set_rng_state(mine["rng"] if mine else saved["rng"])
        if mine:  # this rank's share of the epoch in progress
            p.loss_sum, p.correct, p.seen = mine["sums"]
        elif ranks.rank:  # saved with another number of processes: rank 0 carries what was counted
            p.loss_sum, p.correct, p.seen = 0.0, 0, 0
        del saved
        resumed = {"epoch": p.epoch, "batch": p.batch, "step": p.step}
    else:
        resumed = None
    on_engine({**asdict(engine), "resumed_from": resumed, "world_size": ranks.world, "ddp_backend": ranks.backend,
               "global_batch": r.batch_size, "batch_per_process": r.batch_size // ranks.world, "init": r.init,
               "frozen_params": frozen, "fresh_head": fresh_head})

    attempt_t0, attempt_base = time.perf_counter(), p.elapsed_s

    def elapsed() -> float:
        return attempt_base + time.perf_counter() - attempt_t0

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        shares = ranks.gather({"rng": ckpt.rng_state(), "sums": (p.loss_sum, p.correct, p.seen)})
        if not ranks.main:
            return
        p.elapsed_s = elapsed()
        best_is_current = p.best_epoch == p.epoch and p.batch == 0  # saved right after the epoch that set it
        ckpt.save(checkpoint, {
            "progress": asdict(p), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "best_state": None if best_is_current else best_state, "rng": shares[0]["rng"],
            "ranks": shares if ranks.world > 1 else None,
        })

    def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():  # Mixup/CutMix soft targets, label smoothing folded in
            return F.cross_entropy(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=r.label_smoothing)

    def optimizer_step(x: torch.Tensor, y: torch.Tensor, whole: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over a batch, in ``accum_steps`` micro-batches; (mean loss, correct).
        ``whole``: images in the step's global batch; each micro-batch's loss is weighted by its share
        of it (times the ranks, whose gradients DDP averages), so the step is the single-process step."""
        target = y
        if mixer is not None:  # accuracy is counted against the unmixed labels
            x, target = mixer(x, y)
        x = x.contiguous(memory_format=engine.memory_format)
        opt.zero_grad(set_to_none=True)
        losses, corrects = [], []
        chunks = list(zip(x.split(r.micro_batch), target.split(r.micro_batch), y.split(r.micro_batch)))
        for i, (xc, tc, yc) in enumerate(chunks):
            share = len(yc) * ranks.world / whole
            with wrapped.no_sync() if ranks.world > 1 and i < len(chunks) - 1 else nullcontext():
                with engine.autocast():
                    logits = forward(xc)
                    loss = criterion(logits, tc)
                weighted = loss if share == 1 else loss * share
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

    # stopping: alone, asked before every step; distributed, every rank agrees at the same steps
    check_every = SYNC_EVERY_CUDA if dev.type == "cuda" else 1

    def stop_now() -> bool:
        if ranks.world == 1:
            return should_stop()
        return p.batch % check_every == 0 and ranks.any(should_stop(), dev)

    def over_budget() -> bool:
        hit = r.time_budget_min is not None and elapsed() >= 60 * r.time_budget_min
        if ranks.world == 1 or r.time_budget_min is None:
            return hit
        return p.batch % check_every == 0 and ranks.any(hit, dev)

    # epochs
    stats = StepStats(check_every)
    while p.stopped_by is None:
        if p.epoch >= r.epochs or p.step >= total_steps:  # resumed from the checkpoint of a finished loop
            p.stopped_by = "epochs" if p.epoch >= r.epochs else "max_steps"
            break
        epoch = p.epoch + 1
        if p.batch == 0:
            reset_peak_memory(dev)
        model.train()
        finetune.frozen_norms_to_eval(model)
        train_batches.set_epoch(epoch, start=p.batch)
        segment_t0 = time.perf_counter()
        for x, y in train_batches:
            if stop_now():
                stats.flush(p, epoch)
                sync(dev)
                p.epoch_train_s += time.perf_counter() - segment_t0
                save_checkpoint()
                raise Interrupted()
            p.batch += 1
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if mixer is not None and len(y) % 2:  # mixing pairs images: drop the odd one of a last batch
                x, y = x[:-1], y[:-1]
            # images the step trains over all ranks; a batch some rank has none of is skipped by all alike
            shares = [len(y)] if ranks.world == 1 else trained_shares(
                min(r.batch_size, n_train - (p.batch - 1) * r.batch_size), ranks.world, mixer is not None)
            if min(shares) == 0:
                continue
            set_lr(opt, lr_at(p.step, r, total_steps=total_steps, warmup_steps=warmup_steps,
                              steps_per_epoch=steps_per_epoch))
            loss, correct = optimizer_step(x, y, sum(shares))
            p.step += 1
            stats.add(p, epoch, loss, correct, len(y))
            if p.step >= total_steps:
                break
            if over_budget():
                p.stopped_by = "time_budget"
                break
        stats.flush(p, epoch)
        sync(dev)
        p.epoch_train_s += time.perf_counter() - segment_t0
        p.loss_sum, p.correct, p.seen = ranks.sums([p.loss_sum, float(p.correct), float(p.seen)], dev)
        p.correct, p.seen = int(p.correct), int(p.seen)

        # the epoch's numbers, validation when due (always after the last epoch)
        if p.stopped_by is None and (epoch >= r.epochs or p.step >= total_steps):
            p.stopped_by = "epochs" if epoch >= r.epochs else "max_steps"
        last = p.stopped_by is not None
        metrics = {"train_loss": p.loss_sum / max(p.seen, 1), "train_acc": p.correct / max(p.seen, 1),
                   "lr": opt.param_groups[0]["lr"], "train_images_per_s": p.seen / max(p.epoch_train_s, 1e-9)}
        val_t0 = time.perf_counter()
        if epoch % r.eval_every == 0 or last:
            ranks.sync_buffers(*buffered)
            val_loss, val_acc = evaluate(evaluated, val_batches, engine, ranks)
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
    ranks.sync_buffers(*buffered)
    last_loss, last_acc = evaluate(evaluated, test_batches, engine, ranks)
    eval_module = ema.module if ema is not None else model
    last_state = ckpt.cpu_state(eval_module)
    eval_module.load_state_dict(best_state)
    best_loss, best_acc = evaluate(evaluated, test_batches, engine, ranks)
    chosen = best_state if r.select == "best" else last_state
    eval_module.load_state_dict(chosen)
    if not ranks.main:
        return {}
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
