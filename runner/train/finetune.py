"""Fine-tuning: start from another run's weights, freeze part of the model, train the head at its own rate.

* **Head.** The classifier is the module every family of ours names ``head``; for a timm model
  it is the one its ``pretrained_cfg`` names (``fc`` of a ResNet, ``head.fc`` of a ConvNeXt).
  The norm layers between the features and the head (``norm``, ``fc_norm``, ``head.norm``)
  are its neck.
* **Upstream weights** (``init = "run:..."``) are the upstream's ``model.pt``, the weights its
  recipe selected (the best on its monitor by default). A head whose shape differs (another
  number of classes) keeps the fresh initialization of this run's model; any other mismatch is
  an error naming the parameter, since those weights would not be what was trained.
* **Freeze.** ``backbone`` trains only the neck and the head, ``all_but_head`` only the head.
  Frozen BatchNorm layers also keep their running statistics (they stay in eval mode), so a
  frozen feature extractor is the same function at the end as at the start.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

NECK_NAMES = ("norm", "fc_norm", "head_norm")


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the classifier module(s)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    names = cfg.get("classifier") or "head"
    names = (names,) if isinstance(names, str) else tuple(names)
    modules = dict(model.named_modules())
    found = tuple(n for n in names if n in modules)
    if not found:
        raise ValueError(f"{type(model).__name__}: no classifier module named {' or '.join(names)}; "
                         "freeze and head_lr need one")
    return found


def neck_names(model: nn.Module, heads: tuple[str, ...]) -> tuple[str, ...]:
    """The norm layers right before the head that ``freeze = "backbone"`` leaves trainable."""
    modules = dict(model.named_modules())
    candidates = set(NECK_NAMES) | {f"{h.rpartition('.')[0]}.norm" for h in heads if "." in h}
    return tuple(n for n in sorted(candidates) if n in modules and any(True for _ in modules[n].parameters()))


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def load_upstream(model: nn.Module, path: Path, upstream: str) -> list[str]:
    """Copy the upstream run's selected weights into ``model``; returns the head parameters left
    at their fresh initialization (their shape differs: another number of classes)."""
    if not path.is_file():
        raise FileNotFoundError(f"init: upstream run {upstream} has no weights at {path}; train it first "
                                "(runner launch trains upstreams before the runs that start from them)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    heads = head_names(model)
    kept, fresh = {}, []
    for name, tensor in own.items():
        theirs = state.get(name)
        if theirs is not None and theirs.shape == tensor.shape:
            kept[name] = theirs
        elif _under(name.rpartition(".")[0], heads) and theirs is not None:
            fresh.append(name)  # a new head: this run's own initialization
        else:
            why = "is missing" if theirs is None else f"has shape {tuple(theirs.shape)}, not {tuple(tensor.shape)}"
            raise ValueError(f"init: upstream run {upstream}'s {name} {why}; its architecture must be this run's")
    extra = sorted(set(state) - set(own))
    if extra:
        raise ValueError(f"init: upstream run {upstream} has weights this model lacks ({', '.join(extra[:3])}); "
                         "its architecture must be this run's")
    model.load_state_dict({**own, **kept})
    return fresh


def freeze(model: nn.Module, how: str) -> int:
    """``requires_grad_(False)`` on what the recipe freezes; returns the number of frozen parameters."""
    if how == "none":
        return 0
    heads = head_names(model)
    trainable = heads + (neck_names(model, heads) if how == "backbone" else ())
    frozen = 0
    for name, p in model.named_parameters():
        if not _under(name, trainable):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def frozen_norms_to_eval(model: nn.Module) -> None:
    """Call after ``model.train()``: BatchNorm layers whose parameters are frozen keep their statistics."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def head_parameters(model: nn.Module) -> set[int]:
    """ids of the head's parameters (``head_lr`` applies to them)."""
    heads = head_names(model)
    return {id(p) for n, p in model.named_parameters() if _under(n, heads)}
