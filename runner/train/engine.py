"""The engine of an attempt: how fast a run trains, never what it computes.

The recipe's speed switches (precision, compile, channels_last, fused, data_path) are
resolved here for the device and the model; the result is recorded in the attempt and
left out of the run's id, so switching them on never makes a new run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from runner.train.measure import count_params
from runner.train.optim import use_fused
from runner.study.recipe import Recipe


@dataclass(frozen=True)
class Engine:
    """The speed switches of an attempt, resolved for its device and model (recorded in the attempt)."""

    device: str
    precision: str  # bf16, fp16 or fp32
    compile: bool
    channels_last: bool
    fused: bool
    data_path: str
    checkpoint_every: int

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def resolve_engine(r: Recipe, dev: torch.device, model: nn.Module, data_path: str) -> Engine:
    precision = r.precision if r.precision != "auto" else ("bf16" if dev.type == "cuda" else "fp32")
    channels_last = r.channels_last if r.channels_last != "auto" else (dev.type == "cuda" and is_convolutional(model))
    return Engine(str(dev), precision, r.compile, channels_last, use_fused(r, dev), data_path, r.checkpoint_every)


def is_convolutional(model: nn.Module) -> bool:
    """Most of the weights sit in spatial convolutions (a ViT's patch embedding does not count)."""
    conv = sum(m.weight.numel() for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and m.kernel_size != m.stride)
    return conv > 0.5 * count_params(model)
