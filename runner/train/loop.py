"""The training loop: one run, read top to bottom.

``train`` is the run in named steps: seed -> data -> model, engine (the speed switches:
precision, compile, channels_last, fused optimizer, data path), optimizer, schedule, EMA ->
resume from the run's checkpoint if it has one -> epochs: the optimizer steps of one epoch,
its numbers with validation every ``eval_every`` epochs, a checkpoint every
``checkpoint_every`` -> test of the best and of the last weights -> cost figures -> summary.
The steps share one ``Run`` (``runner/train/loop_state.py``): model, optimizer, batches, counters.

The worker owns the run folder: this module is told where the checkpoint and the final
weights go, calls back with the resolved engine and each epoch's metrics, and returns the
summary (``runner/records/summary.py``), so it can be used on its own.

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

from runner.records.summary import Summary
from runner.study.recipe import Recipe
from runner.train import checkpoint as ckpt
from runner.train import finetune
from runner.train.distributed import Ranks
from runner.train.engine import Engine, resolve_engine
from runner.train.loop_state import Data, Progress, Run, StepStats
from runner.train.measure import INFER_BATCH, count_flops, count_params, inference_speed, peak_memory_mb, reset_peak_memory
from runner.train.optim import WeightEma, lr_at, make_optimizer, set_lr

EVAL_BATCH = 512
SOLO = Ranks()  # a run in one process
SYNC_EVERY_CUDA = 16  # optimizer steps between reads of the loss on CUDA (a read waits for the GPU)


class Interrupted(Exception):
    """The worker was asked to stop (SIGTERM, SIGUSR1, Ctrl-C of the launcher): not a failure of the run.
    The run checkpointed first, so it resumes where it stopped."""


def train(config: dict, *, device: str = "cpu", checkpoint: Path | None = None, weights: Path | None = None,
          upstream: Path | None = None, ranks: Ranks = SOLO,
          on_engine: Callable[[dict], None] = lambda e: None,
          on_epoch: Callable[[int, int, dict], None] = lambda *a: None,
          should_stop: Callable[[], bool] = lambda: False) -> Summary | dict:
    """Train one resolved config (resuming from ``checkpoint`` if it exists); return its summary.
    ``upstream``: the weights ``init = "run:..."`` starts from. ``ranks``: this process's place in a
    distributed run (``runner/train/distributed.py``); ranks other than 0 write nothing and return {}."""
    r = Recipe(**config["train"])
    dev = torch.device(device)
    seed_everything(config["seed"])
    reset_peak_memory(dev)

    data = load_data(config, r, dev, ranks)
    saved = ckpt.load(checkpoint) if checkpoint is not None else None
    run = build(config, r, data, dev, ranks, upstream=upstream, resuming=saved is not None)
    resumed = resume(run, saved) if saved is not None else None
    del saved
    on_engine({**asdict(run.engine), "resumed_from": resumed, "world_size": ranks.world, "ddp_backend": ranks.backend,
               "global_batch": r.batch_size, "batch_per_process": r.batch_size // ranks.world, "init": r.init,
               "frozen_params": run.frozen, "fresh_head": run.fresh_head})

    # epochs (none when resumed from the checkpoint of a finished loop)
    run.start_clock()
    while not run.over(run.p.epoch):
        epoch = run.p.epoch + 1
        train_epoch(run, epoch, should_stop, checkpoint)
        last = run.over(epoch)
        metrics = close_epoch(run, epoch, validate=epoch % r.eval_every == 0 or last)
        on_epoch(epoch, run.p.step, metrics)
        if (run.engine.checkpoint_every and epoch % run.engine.checkpoint_every == 0) or last:
            save_checkpoint(run, checkpoint)

    chosen, best, final = test(run)
    if not ranks.main:
        return {}
    if weights is not None:
        ckpt.save_atomic(weights, chosen)
    return summarise(run, best, final)


# ---------------------------------------------------------------- build


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def load_split(dataset: dict, split: str):
    """``(dataset, DatasetInfo)`` of one split of a resolved ``dataset`` section."""
    opts = dict(dataset)
    return build_dataset(opts.pop("source"), root=opts.pop("root", None), split=split, **opts)


def load_data(config: dict, r: Recipe, dev: torch.device, ranks: Ranks) -> Data:
    """The batches of the three splits, this rank's share of each: the split is fixed by the
    dataset, the order of batches and the augmentation by (seed, epoch)."""
    shard = (ranks.rank, ranks.world)
    splits = {s: load_split(config["dataset"], s) for s in SPLITS}
    info = splits["train"][1]
    train_batches = make_batches(splits["train"][0], r.batch_size, dev, shuffle=True, seed=config["seed"],
                                 augmentation=r.augmentation(), path=r.data_path, shard=shard)
    eval_path = "loader" if r.data_path == "loader" else "auto"
    val_batches = make_batches(splits["val"][0], EVAL_BATCH, dev, shuffle=False, path=eval_path, shard=shard)
    test_batches = make_batches(splits["test"][0], EVAL_BATCH, dev, shuffle=False, path=eval_path, shard=shard)
    sizes = {f"n_{s}": len(splits[s][0]) for s in SPLITS}
    mixer = make_mixer(r.mixup, r.cutmix, r.mix_prob, r.mix_switch_prob, r.label_smoothing, info.num_classes)
    return Data(train_batches, val_batches, test_batches, info, sizes, mixer)


def build_model(architecture: dict, info, *, pretrained: bool = False) -> nn.Module:
    """The model of a resolved ``architecture`` section, shaped by the dataset (classes, channels, size);
    ``pretrained``: timm's weights (``init = "pretrained"``; plan time allows it for timm models only)."""
    arch = dict(architecture) | ({"pretrained": True} if pretrained else {})
    arch.pop("in_chans", None)  # a family's optional in_chans was checked against the dataset at plan time
    return create_model(arch.pop("model"), num_classes=info.num_classes, in_chans=info.in_chans,
                        img_size=info.img_size, **arch)


def build(config: dict, r: Recipe, data: Data, dev: torch.device, ranks: Ranks, *, upstream: Path | None,
          resuming: bool) -> Run:
    """Everything a run trains with, in the order that draws the same random numbers every time."""
    # model: from scratch, pretrained, or an upstream run's weights (unless resuming); what of it trains
    model = build_model(config["architecture"], data.info, pretrained=r.init == "pretrained" and not resuming).to(dev)
    fresh_head = finetune.load_upstream(model, upstream, r.init[4:]) if upstream is not None and not resuming else []
    frozen = finetune.freeze(model, r.freeze)
    if ranks.rank:  # dropout and other randomness of the model differ between ranks; rank 0 draws as alone
        torch.manual_seed(config["seed"] + 1_000_003 * ranks.rank)

    # engine: precision, channels_last, DDP, torch.compile, fused optimizer (how fast, never what)
    engine = resolve_engine(r, dev, model, data.train.path)
    model = model.to(memory_format=engine.memory_format)
    wrapped = model if ranks.world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev] if dev.type == "cuda" else None)
    forward = torch.compile(wrapped) if engine.compile else wrapped  # shares the parameters of ``model``

    # optimizer (the head at head_lr), per-step schedule, EMA, loss scaling (fp16 only)
    head = finetune.head_parameters(model) if r.head_lr is not None else set()
    opt = make_optimizer(model, r, fused=engine.fused, head=head)
    ema = WeightEma(model, r.ema_decay) if r.ema_decay else None
    scaler = torch.amp.GradScaler(dev.type) if engine.precision == "fp16" else None
    steps_per_epoch = len(data.train)
    check_every = SYNC_EVERY_CUDA if dev.type == "cuda" else 1
    return Run(recipe=r, device=dev, ranks=ranks, data=data, engine=engine, model=model, wrapped=wrapped,
               forward=forward, opt=opt, ema=ema, scaler=scaler, steps_per_epoch=steps_per_epoch,
               total_steps=min(r.epochs * steps_per_epoch, r.max_steps or math.inf),
               warmup_steps=round(r.warmup_epochs * steps_per_epoch), check_every=check_every,
               stats=StepStats(check_every), frozen=frozen, fresh_head=fresh_head)


# ---------------------------------------------------------------- resume and checkpoint


def resume(run: Run, saved: dict) -> dict:
    """Bring ``run`` to where its checkpoint left it: weights, optimizer, scaler, EMA, best weights,
    counters and RNG states (this rank's own when the checkpoint has them). Returns where it resumed."""
    p, ranks = Progress(**saved["progress"]), run.ranks
    run.model.load_state_dict(saved["model"])
    run.opt.load_state_dict(saved["optimizer"])
    if run.scaler is not None and saved["scaler"] is not None:
        run.scaler.load_state_dict(saved["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(saved["ema"])
    run.best_state = saved["best_state"] or ckpt.cpu_state(run.weights)
    shares = saved.get("ranks") or []
    mine = shares[ranks.rank] if ranks.world > 1 and len(shares) == ranks.world else None
    ckpt.set_rng_state(mine["rng"] if mine else saved["rng"])
    if mine:  # this rank's share of the epoch in progress
        p.loss_sum, p.correct, p.seen = mine["sums"]
    elif ranks.rank:  # saved with another number of processes: rank 0 carries what was counted
        p.loss_sum, p.correct, p.seen = 0.0, 0, 0
    run.p = p
    return {"epoch": p.epoch, "batch": p.batch, "step": p.step}


def save_checkpoint(run: Run, path: Path | None) -> None:
    """Everything to go on from here, every rank's RNG states and sums included (rank 0 writes it)."""
    if path is None:
        return
    p, ranks = run.p, run.ranks
    shares = ranks.gather({"rng": ckpt.rng_state(), "sums": (p.loss_sum, p.correct, p.seen)})
    if not ranks.main:
        return
    p.elapsed_s = run.elapsed()
    best_is_current = p.best_epoch == p.epoch and p.batch == 0  # saved right after the epoch that set it
    ckpt.save(path, {
        "progress": asdict(p), "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "best_state": None if best_is_current else run.best_state, "rng": shares[0]["rng"],
        "ranks": shares if ranks.world > 1 else None,
    })


# ---------------------------------------------------------------- one epoch


def train_epoch(run: Run, epoch: int, should_stop: Callable[[], bool], checkpoint: Path | None) -> None:
    """The optimizer steps of ``epoch`` from the batch it stopped at (``p.batch``), then the epoch's
    sums over the ranks. A stop request checkpoints where it is and raises ``Interrupted``;
    ``max_steps`` and the time budget end the epoch early."""
    p, r, dev, ranks, mixer = run.p, run.recipe, run.device, run.ranks, run.data.mixer
    if p.batch == 0:
        reset_peak_memory(dev)
    run.model.train()
    finetune.frozen_norms_to_eval(run.model)
    run.data.train.set_epoch(epoch, start=p.batch)
    segment_t0 = time.perf_counter()
    for x, y in run.data.train:
        if run.stop_now(should_stop):
            _end_segment(run, epoch, segment_t0)
            save_checkpoint(run, checkpoint)
            raise Interrupted()
        p.batch += 1
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if mixer is not None and len(y) % 2:  # mixing pairs images: drop the odd one of a last batch
            x, y = x[:-1], y[:-1]
        # images the step trains over all ranks; a batch some rank has none of is skipped by all alike
        shares = [len(y)] if ranks.world == 1 else trained_shares(
            min(r.batch_size, run.data.sizes["n_train"] - (p.batch - 1) * r.batch_size), ranks.world,
            mixer is not None)
        if min(shares) == 0:
            continue
        set_lr(run.opt, lr_at(p.step, r, total_steps=run.total_steps, warmup_steps=run.warmup_steps,
                              steps_per_epoch=run.steps_per_epoch))
        loss, correct = optimizer_step(run, x, y, sum(shares))
        p.step += 1
        run.stats.add(p, epoch, loss, correct, len(y))
        if p.step >= run.total_steps:
            break
        if run.over_budget():
            p.stopped_by = "time_budget"
            break
    _end_segment(run, epoch, segment_t0)
    p.loss_sum, p.correct, p.seen = ranks.sums([p.loss_sum, float(p.correct), float(p.seen)], dev)
    p.correct, p.seen = int(p.correct), int(p.seen)


def _end_segment(run: Run, epoch: int, t0: float) -> None:
    """The steps since ``t0`` read back and timed (the device done with them)."""
    run.stats.flush(run.p, epoch)
    sync(run.device)
    run.p.epoch_train_s += time.perf_counter() - t0


def optimizer_step(run: Run, x: torch.Tensor, y: torch.Tensor, whole: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over a batch, in ``accum_steps`` micro-batches; (mean loss, correct).
    ``whole``: images in the step's global batch; each micro-batch's loss is weighted by its share
    of it (times the ranks, whose gradients DDP averages), so the step is the single-process step."""
    r, engine, world, opt, scaler = run.recipe, run.engine, run.ranks.world, run.opt, run.scaler
    target = y
    if run.data.mixer is not None:  # accuracy is counted against the unmixed labels
        x, target = run.data.mixer(x, y)
    x = x.contiguous(memory_format=engine.memory_format)
    opt.zero_grad(set_to_none=True)
    losses, corrects = [], []
    chunks = list(zip(x.split(r.micro_batch), target.split(r.micro_batch), y.split(r.micro_batch)))
    for i, (xc, tc, yc) in enumerate(chunks):
        share = len(yc) * world / whole
        with run.wrapped.no_sync() if world > 1 and i < len(chunks) - 1 else nullcontext():
            with engine.autocast():
                logits = run.forward(xc)
                loss = criterion(logits, tc, r.label_smoothing)
            weighted = loss if share == 1 else loss * share
            (scaler.scale(weighted) if scaler is not None else weighted).backward()
        losses.append(weighted.detach())
        corrects.append((logits.detach().argmax(1) == yc).sum())
    if r.grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(run.model.parameters(), r.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if run.ema is not None:
        run.ema.update(run.model)
    if len(losses) == 1:
        return losses[0], corrects[0]
    return torch.stack(losses).sum(), torch.stack(corrects).sum()


def criterion(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    if target.is_floating_point():  # Mixup/CutMix soft targets, label smoothing folded in
        return F.cross_entropy(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def close_epoch(run: Run, epoch: int, *, validate: bool) -> dict:
    """The epoch's metrics, with validation when ``validate``; the counters move on to the next epoch."""
    p, dev = run.p, run.device
    metrics = {"train_loss": p.loss_sum / max(p.seen, 1), "train_acc": p.correct / max(p.seen, 1),
               "lr": run.opt.param_groups[0]["lr"], "train_images_per_s": p.seen / max(p.epoch_train_s, 1e-9)}
    val_t0 = time.perf_counter()
    if validate:
        metrics.update(validation(run, epoch))
    peak_mb, _ = peak_memory_mb(dev)
    metrics.update(epoch_time_s=p.epoch_train_s + time.perf_counter() - val_t0, peak_mem_mb=peak_mb)
    p.train_time_s += p.epoch_train_s
    p.images += p.seen
    p.peak_mb = max(p.peak_mb, peak_mb)
    p.epoch, p.batch, p.loss_sum, p.correct, p.seen, p.epoch_train_s = epoch, 0, 0.0, 0, 0, 0.0
    p.last = metrics
    return metrics


def validation(run: Run, epoch: int) -> dict[str, float]:
    """Validation loss and accuracy; keeps the weights best on the recipe's monitor, and stops
    early after ``patience`` validations without improvement."""
    p, r = run.p, run.recipe
    run.ranks.sync_buffers(*run.buffered)
    val_loss, val_acc = evaluate(run.evaluated, run.data.val, run.engine, run.ranks)
    p.best_val_acc = max(p.best_val_acc, val_acc)
    value, sign = (val_acc, 1.0) if r.monitor == "val_acc" else (val_loss, -1.0)
    if p.best is None or sign * (value - p.best) > r.min_delta:
        p.best, p.best_epoch, p.bad_evals = value, epoch, 0
        run.best_state = ckpt.cpu_state(run.weights)
    else:
        p.bad_evals += 1
        if r.patience is not None and p.bad_evals >= r.patience and p.stopped_by is None:
            p.stopped_by = "early_stop"
    return {"val_loss": val_loss, "val_acc": val_acc}


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


# ---------------------------------------------------------------- test and summary


def test(run: Run) -> tuple[dict[str, torch.Tensor], tuple[float, float], tuple[float, float]]:
    """The test split on the last weights, then on the best (on the monitor); leaves the model with
    the weights the recipe selects. Returns them, and (loss, accuracy) of the best and of the last."""
    run.ranks.sync_buffers(*run.buffered)
    last = evaluate(run.evaluated, run.data.test, run.engine, run.ranks)
    last_state = ckpt.cpu_state(run.weights)
    run.weights.load_state_dict(run.best_state)
    best = evaluate(run.evaluated, run.data.test, run.engine, run.ranks)
    chosen = run.best_state if run.recipe.select == "best" else last_state
    run.weights.load_state_dict(chosen)
    return chosen, best, last


def summarise(run: Run, best: tuple[float, float], last: tuple[float, float]) -> Summary:
    """The run's summary, with the cost figures of the eager module in the run's precision and memory format."""
    r, p, dev, engine, info = run.recipe, run.p, run.device, run.engine, run.data.info
    sample_shape = (info.in_chans, info.img_size, info.img_size)
    infer_ips, infer_ms = inference_speed(run.weights, sample_shape, dev, engine.autocast, engine.memory_format)
    peak_mb, peak_kind = peak_memory_mb(dev)
    test_loss, test_acc = best if r.select == "best" else last
    return Summary(
        test_acc=test_acc, test_loss=test_loss,
        test_acc_best=best[1], test_loss_best=best[0], test_acc_last=last[1], test_loss_last=last[0],
        best_val_acc=p.best_val_acc, best_epoch=p.best_epoch, monitor=r.monitor, best_monitor=p.best,
        val_acc=p.last["val_acc"], val_loss=p.last["val_loss"],
        train_acc=p.last["train_acc"], train_loss=p.last["train_loss"],
        epochs=p.epoch, steps=p.step, stopped_by=p.stopped_by, params=count_params(run.model),
        flops=count_flops(run.weights, torch.randn(1, *sample_shape, device=dev)),
        train_time_s=p.train_time_s, train_images_per_s=p.images / max(p.train_time_s, 1e-9),
        infer_images_per_s=infer_ips, infer_latency_ms=infer_ms, infer_batch_size=INFER_BATCH,
        peak_mem_mb=max(p.peak_mb, peak_mb), peak_mem_kind=peak_kind, device=str(dev),
        data_path=engine.data_path, precision=engine.precision,
        n_train=run.data.sizes["n_train"], n_val=run.data.sizes["n_val"], n_test=run.data.sizes["n_test"],
    )
