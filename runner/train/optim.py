"""Optimizer, learning-rate schedule and weight EMA of a recipe.

The schedule is a pure function of the optimizer step, so the step number is all a
checkpoint needs to restore it exactly; the EMA and the optimizer have state dicts.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from runner.study.recipe import Recipe


def param_groups(model: nn.Module, weight_decay: float, *, head: set[int] = frozenset(),
                 head_scale: float = 1.0) -> list[dict]:
    """Which parameters weight decay applies to is the model's rule, as its paper's code has it:
    a family declares ``decayed(name, param) -> bool`` beside its model (dual attention decays
    everything, Cordonnier et al. all but the Gaussian centres and spreads). Without one (timm's
    models, ViT) the rule is timm's: weights only, norms, biases and other vectors (ndim < 2)
    exempt, and whatever the model names in ``no_weight_decay()`` (position embeddings, class
    tokens). Parameters in ``head`` (ids) get their own groups whose learning rate is
    ``head_scale`` times the schedule's (``head_lr``); frozen parameters are left out."""
    decays = decay_rule(model)
    groups = {(h, d): [] for h in (False, True) for d in (True, False)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[(id(p) in head, bool(decays(name, p)))].append(p)
    out = []
    for (is_head, decayed), params in groups.items():
        if params or not is_head:  # the two body groups always exist (checkpoints rely on their order)
            out.append({"params": params, "weight_decay": weight_decay if decayed else 0.0,
                        "lr_scale": head_scale if is_head else 1.0})
    return out


def decay_rule(model: nn.Module):
    """``(name, param) -> bool``: whether weight decay applies, by the model's rule (see ``param_groups``)."""
    rule = getattr(model, "decayed", None)
    if rule is not None:
        return rule
    exempt = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return lambda name, p: not (p.ndim < 2 or name in exempt)


def make_optimizer(model: nn.Module, r: Recipe, *, fused: bool = False, head: set[int] = frozenset()) -> torch.optim.Optimizer:
    """AdamW (decoupled decay), Adam (decay as coupled L2), SGD (momentum, Nesterov) or LAMB
    (timm's); ``fused`` picks the one-kernel implementations of AdamW, Adam and SGD (LAMB has
    none). ``head``: ids of the parameters ``head_lr`` applies to."""
    scale = r.head_lr / r.lr if r.head_lr is not None else 1.0
    groups = param_groups(model, r.weight_decay, head=head if r.head_lr is not None else frozenset(), head_scale=scale)
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0,
                               fused=fused or None)
    if r.optimizer == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, lr=r.lr)
    if r.optimizer == "adam":
        return torch.optim.Adam(groups, lr=r.lr, fused=fused or None)
    return torch.optim.AdamW(groups, lr=r.lr, fused=fused or None)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate for this step, times each group's ``lr_scale`` (the head's ``head_lr``)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def use_fused(r: Recipe, device: torch.device) -> bool:
    """Fused kernels exist for AdamW, Adam and SGD on CUDA and CPU; ``auto`` takes them on CUDA only,
    where they pay off (on CPU they are a choice, ``fused = true``)."""
    if r.optimizer not in ("adamw", "adam", "sgd") or device.type not in ("cuda", "cpu"):
        return False
    return device.type == "cuda" if r.fused == "auto" else r.fused


def lr_at(step: int, r: Recipe, *, total_steps: int, warmup_steps: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up from 0 to ``lr``, then
    cosine down to ``min_lr`` at ``total_steps``, step decay by ``decay_rate``, or constant."""
    if step < warmup_steps:
        return r.lr * (step + 1) / warmup_steps
    if r.schedule == "constant":
        return r.lr
    if r.schedule == "step":
        epoch = step / steps_per_epoch
        if isinstance(r.decay_epochs, list):
            decays = sum(1 for m in r.decay_epochs if epoch >= m)
        else:
            decays = math.floor(epoch / r.decay_epochs + 1e-9)
        return r.lr * r.decay_rate ** decays
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


class WeightEma:
    """An exponential moving average of a model's weights, updated after every optimizer step;
    buffers (BatchNorm statistics) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = [p for p in self.module.parameters()]
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, live, 1.0 - self.decay)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
