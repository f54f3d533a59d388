"""The training loop: one run, read top to bottom.

seed -> data -> model -> optimizer and schedule -> epochs of train + validate
-> test of the selected weights -> cost figures (params, FLOPs, inference speed,
memory) -> summary. The worker owns the run folder; this module only calls back
with metrics and returns the summary, so it can be used on its own.
"""

from __future__ import annotations

import copy
import math
import os
import random
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from architectures import create_model
from datasets import SPLITS, build_dataset
from datasets.batches import make_batches, make_mixer

from .recipe import Recipe

INFER_BATCH = 64  # fixed batch size of the inference-speed figures, so runs compare
EVAL_BATCH = 512


class Interrupted(Exception):
    """The worker was asked to stop (SIGTERM, Ctrl-C of the launcher): not a failure of the run."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ---------------------------------------------------------------- optimization


def make_optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    """Weight decay on weights only: norms, biases and embeddings-as-vectors (ndim < 2) are exempt."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.momentum > 0)
    return torch.optim.AdamW(groups, lr=r.lr)


def lr_at(step: int, total: int, warmup: int, r: Recipe) -> float:
    """Linear warm-up from 0 to ``lr``, then cosine down to ``min_lr``; per optimizer step."""
    if step < warmup:
        return r.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: nn.Module, batches) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(model_device(model), non_blocking=True), y.to(model_device(model), non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    return loss_sum / max(n, 1), correct / max(n, 1)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------- cost figures


def count_flops(model: nn.Module, sample: torch.Tensor) -> int | None:
    """Forward FLOPs of one image (a multiply-add counts 2). Attention goes through the math
    kernel here so its matrix products are counted; None if an op cannot be counted."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(sample)
        return int(counter.get_total_flops())
    except Exception:
        return None


@torch.no_grad()
def inference_speed(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> tuple[float, float]:
    """(images/s, ms per batch) at batch ``INFER_BATCH``, after warm-up, with device syncs."""
    model.eval()
    x = torch.randn(INFER_BATCH, *shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        model(x)
    sync()
    iters, start = 0, time.perf_counter()
    while iters < 5 or (time.perf_counter() - start < 0.5 and iters < 200):
        model(x)
        iters += 1
    sync()
    elapsed = time.perf_counter() - start
    return INFER_BATCH * iters / elapsed, 1000 * elapsed / iters


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory of this run and what it measures: CUDA allocations, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "process_peak_rss"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"


# ---------------------------------------------------------------- the run


def train(config: dict, *, device: str = "cpu", on_epoch: Callable[[int, int, dict], None] = lambda *a: None,
          should_stop: Callable[[], bool] = lambda: False, weights_path: Path | None = None) -> dict:
    """Train one resolved config; return its summary (metric names of the design)."""
    r = Recipe(**config["train"])
    dev = torch.device(device)
    seed_everything(config["seed"])
    reset_peak_memory(dev)

    # data: the split is fixed by the dataset; the order of batches and the augmentation by the seed
    data_opts = dict(config["dataset"])
    source, root = data_opts.pop("source"), data_opts.pop("root", None)
    splits = {s: build_dataset(source, root=root, split=s, **data_opts) for s in SPLITS}
    info = splits["train"][1]
    train_batches = make_batches(splits["train"][0], r.batch_size, dev, shuffle=True, seed=config["seed"],
                                 augmentation=r.augmentation())
    val_batches = make_batches(splits["val"][0], EVAL_BATCH, dev, shuffle=False)
    test_batches = make_batches(splits["test"][0], EVAL_BATCH, dev, shuffle=False)
    sizes = {f"n_{s}": len(splits[s][0]) for s in SPLITS}
    mixer = make_mixer(r.mixup, r.cutmix, r.mix_prob, r.mix_switch_prob, r.label_smoothing, info.num_classes)

    # model
    arch = dict(config["architecture"])
    arch.pop("in_chans", None)  # a family's optional in_chans was checked against the dataset at plan time
    model = create_model(arch.pop("model"), num_classes=info.num_classes, in_chans=info.in_chans,
                         img_size=info.img_size, **arch).to(dev)
    params = sum(p.numel() for p in model.parameters())

    # optimizer and per-step schedule
    opt = make_optimizer(model, r)
    steps_per_epoch = len(train_batches)
    total_steps, warmup_steps = r.epochs * steps_per_epoch, round(r.warmup_epochs * steps_per_epoch)

    step, train_time, best_val_acc, best_state, best_epoch = 0, 0.0, -1.0, None, 0
    metrics: dict[str, float] = {}
    for epoch in range(1, r.epochs + 1):
        model.train()
        train_batches.set_epoch(epoch)
        loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
        for x, y in train_batches:
            if should_stop():
                raise Interrupted()
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, r)
            if mixer is not None:  # soft targets (label smoothing folded in); accuracy against the unmixed labels
                if len(y) % 2:
                    x, y = x[:-1], y[:-1]
                if len(y) == 0:
                    continue
                x, target = mixer(x, y)
                logits = model(x)
                loss = F.cross_entropy(logits, target)
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if r.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
            opt.step()
            step += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time

        val_loss, val_acc = evaluate(model, val_batches)
        metrics = {"train_loss": loss_sum / seen, "train_acc": correct / seen, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": opt.param_groups[0]["lr"], "epoch_time_s": epoch_time,
                   "train_images_per_s": seen / epoch_time}
        if val_acc > best_val_acc:
            best_val_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        on_epoch(epoch, step, metrics)

    # test the last weights, then the best (by validation accuracy); the recipe picks the reported pair
    last_loss, last_acc = evaluate(model, test_batches)
    last_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    best_loss, best_acc = evaluate(model, test_batches)
    chosen = best_state if r.select == "best" else last_state
    model.load_state_dict(chosen)
    if weights_path is not None:
        tmp = weights_path.with_suffix(".tmp")
        torch.save(chosen, tmp)
        os.replace(tmp, weights_path)

    sample_shape = (info.in_chans, info.img_size, info.img_size)
    infer_ips, infer_ms = inference_speed(model, sample_shape, dev)
    peak_mb, peak_kind = peak_memory_mb(dev)
    test_loss, test_acc = (best_loss, best_acc) if r.select == "best" else (last_loss, last_acc)
    return {
        "test_acc": test_acc, "test_loss": test_loss,
        "test_acc_best": best_acc, "test_loss_best": best_loss, "test_acc_last": last_acc, "test_loss_last": last_loss,
        "best_val_acc": best_val_acc, "best_epoch": best_epoch,
        "val_acc": metrics["val_acc"], "val_loss": metrics["val_loss"],
        "train_acc": metrics["train_acc"], "train_loss": metrics["train_loss"],
        "epochs": r.epochs, "steps": step, "params": params,
        "flops": count_flops(model, torch.randn(1, *sample_shape, device=dev)),
        "train_time_s": train_time, "train_images_per_s": sizes["n_train"] * r.epochs / train_time,
        "infer_images_per_s": infer_ips, "infer_latency_ms": infer_ms, "infer_batch_size": INFER_BATCH,
        "peak_mem_mb": peak_mb, "peak_mem_kind": peak_kind, "device": str(dev), "data_path": train_batches.path,
        **sizes,
    }
