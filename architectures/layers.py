"""Small layers shared by the families, chosen by name from ``experiments.toml``."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    """``"gelu"`` -> ``nn.GELU()``; the names are those ``hparams.Activation`` allows."""
    return ACTIVATIONS[name]()


def trunc_normal_init(m: nn.Module, std: float = 0.02) -> None:
    """ViT-style init for ``module.apply``: truncated normal linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
