"""The architecture registry: ``create_model(name, *, num_classes, in_chans, img_size, **hparams)``.

Names map to a hyperparameter class (torch-free, in ``hparams.py``) and a builder
in the family's own file, imported only when a model is built. ``timm:<model>``
builds any timm model. Importing this package never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from . import hparams as _hp


@dataclass(frozen=True)
class Family:
    """One registered architecture: its hyperparameters and where its builder lives."""

    name: str
    hparams: type
    builder: str  # "module:function", imported lazily
    summary: str
    attention: bool | None = None  # has attention layers a probe can read (None: known once built, timm)


_REGISTRY: dict[str, Family] = {}


def register(name: str, hparams: type, builder: str, summary: str, *, attention: bool | None = None) -> None:
    if name in _REGISTRY:
        raise ValueError(f"architecture {name!r} registered twice")
    _REGISTRY[name] = Family(name, hparams, builder, summary, attention)


register("vit", _hp.ViTHparams, "architectures.vit:build", "Vision Transformer, cls token, pre-norm, SDPA",
         attention=True)
register("dual_attention", _hp.DualAttentionHparams, "architectures.dual_attention:build",
         "dual-attention transformer: self-attention + relational-attention heads (Altabaa et al.)", attention=True)
register("san_pairwise", _hp.SANPairwiseHparams, "architectures.san:build_pairwise",
         "SAN with pairwise self-attention (Zhao, Jia, Koltun 2020)", attention=True)
register("san_patchwise", _hp.SANPatchwiseHparams, "architectures.san:build_patchwise",
         "SAN with patchwise self-attention (Zhao, Jia, Koltun 2020)", attention=True)
register("conv_attention", _hp.ConvAttentionHparams, "architectures.conv_attention:build",
         "full-pixel attention with quadratic or learned 2-D relative encoding (Cordonnier et al. 2020)",
         attention=True)
register("resnet18_cifar", _hp.ResNetCifarHparams, "architectures.cnn:build_resnet18_cifar",
         "ResNet-18 with a 3x3 stride-1 stem and no max-pool, for small images", attention=False)
register("resnet34_cifar", _hp.ResNetCifarHparams, "architectures.cnn:build_resnet34_cifar",
         "ResNet-34 with a 3x3 stride-1 stem and no max-pool, for small images", attention=False)

TIMM_PREFIX = "timm:"


def list_models() -> list[str]:
    """Registered names (``timm:<model>`` is accepted in addition)."""
    return sorted(_REGISTRY)


def get_family(name: str) -> Family | None:
    """The family of a registry name, or None if unknown. ``timm:*`` maps to a pass-through family."""
    if name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        return Family(name, _hp.TimmHparams, "architectures.timm_models:build", "any timm model")
    return _REGISTRY.get(name)


def create_model(name: str, *, num_classes: int, in_chans: int, img_size: int, **hparams):
    """Build the ``nn.Module`` registered under ``name`` (imports torch on first use)."""
    family = get_family(name)
    if family is None:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(list_models())}, or timm:<model>")
    module_name, func = family.builder.split(":")
    build = getattr(importlib.import_module(module_name), func)
    params = family.hparams(**hparams)
    if name.startswith(TIMM_PREFIX):
        return build(name[len(TIMM_PREFIX):], params, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    return build(params, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
