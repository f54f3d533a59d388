"""Resolved configs for training-engine tests: a tiny ViT (with dropout, so the model's own RNG
matters) and a tiny ResNet (with BatchNorm) on digits, resolved by the real plan."""

from __future__ import annotations

import tempfile
from pathlib import Path

from conftest import write_study
from studies import CNN, DIGITS, VIT, study_toml


def config(architecture: str = "vit", *, dataset: dict | None = None, **train) -> dict:
    """The resolved config of ``architecture`` on digits with the given recipe keys."""
    from runner.plan.expand import expand
    from runner.study.spec import load_study

    text = study_toml("engine", seeds=[0], defaults={"epochs": 3, "batch_size": 64, "lr": 3e-3, **train},
                      architectures={"vit": VIT | {"dropout": 0.1}, "cnn": CNN},
                      datasets={"digits": DIGITS | (dataset or {})}, tables=())
    with tempfile.TemporaryDirectory() as d:
        runs = expand(load_study(write_study(Path(d), text))).runs
    return next(r.config for r in runs if r.architecture == architecture)
