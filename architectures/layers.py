"""Small layers shared by the families, chosen by name from ``experiments.toml``."""

from __future__ import annotations

import functools

from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"), "relu": nn.ReLU, "silu": nn.SiLU, "identity": nn.Identity, "sigmoid": nn.Sigmoid,
               "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    """``"gelu"`` -> ``nn.GELU()``; hparams restrict each option to the names that make sense there."""
    return ACTIVATIONS[name]()


def trunc_normal_init(m: nn.Module, std: float = 0.02) -> None:
    """ViT-style init for ``module.apply``: truncated normal linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
