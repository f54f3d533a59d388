"""The registry itself: names to families, and building a model from a name.

A family package registers itself when ``architectures`` imports it; the registry keeps
only the builder's ``"module:function"`` path, so torch is imported when a model is built,
never when a study is validated.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Family:
    """One registered architecture: its hyperparameters and where its builder lives."""

    name: str
    hparams: type
    builder: str  # "module:function", imported lazily
    summary: str
    attention: bool | None = None  # has attention layers a probe can read (None: known once built, timm)
    prefix: str = ""  # set for a pass-through family: the builder takes the model name after it first


_REGISTRY: dict[str, Family] = {}
_PREFIXES: dict[str, Family] = {}


def register(name: str, hparams: type, builder: str, summary: str, *, attention: bool | None = None) -> None:
    """Make ``name`` buildable: ``builder(hparams(**hp), *, num_classes, in_chans, img_size)``."""
    if name in _REGISTRY:
        raise ValueError(f"architecture {name!r} registered twice")
    _REGISTRY[name] = Family(name, hparams, builder, summary, attention)


def register_prefix(prefix: str, hparams: type, builder: str, summary: str) -> None:
    """Make every ``<prefix><model>`` buildable by another library's own name for the model:
    ``builder(model, hparams(**hp), *, num_classes, in_chans, img_size)``."""
    if prefix in _PREFIXES:
        raise ValueError(f"architecture prefix {prefix!r} registered twice")
    _PREFIXES[prefix] = Family(prefix, hparams, builder, summary, prefix=prefix)


def list_models() -> list[str]:
    """Registered names (``timm:<model>`` is accepted in addition)."""
    return sorted(_REGISTRY)


def get_family(name: str) -> Family | None:
    """The family of a registry name, or None if unknown. ``timm:*`` maps to a pass-through family."""
    for prefix, family in _PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return replace(family, name=name)
    return _REGISTRY.get(name)


def create_model(name: str, *, num_classes: int, in_chans: int, img_size: int, **hparams):
    """Build the ``nn.Module`` registered under ``name`` (imports torch on first use)."""
    family = get_family(name)
    if family is None:
        passthrough = "".join(f", or {p}<model>" for p in _PREFIXES)
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(list_models())}{passthrough}")
    module_name, func = family.builder.split(":")
    build = getattr(importlib.import_module(module_name), func)
    params = family.hparams(**hparams)
    if family.prefix:
        return build(name[len(family.prefix):], params, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    return build(params, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
