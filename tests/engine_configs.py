"""Resolved configs for training-engine tests: a tiny ViT (with dropout, so the model's own RNG
matters) and a tiny ResNet (with BatchNorm) on digits, resolved by the real plan."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from conftest import write_study

STUDY = """
[study]
name = "engine"
seeds = [0]

[defaults]
{defaults}

[architectures.vit]
model = "vit"
patch_size = 4
dim = 16
depth = 1
heads = 2
mlp_dim = 32
dropout = 0.1

[architectures.cnn]
model = "resnet18_cifar"
width = 4

[datasets.digits]
source = "digits"
{dataset}

[[matrix]]
name = "main"
architectures = ["vit", "cnn"]
datasets = ["digits"]
"""


def toml_value(value) -> str:
    return json.dumps(value).lower() if isinstance(value, bool) else json.dumps(value)


def config(architecture: str = "vit", *, dataset: dict | None = None, **train) -> dict:
    """The resolved config of ``architecture`` on digits with the given recipe keys."""
    from runner.plan.expand import expand
    from runner.study.spec import load_study

    train = {"epochs": 3, "batch_size": 64, "lr": 3e-3, **train}
    text = STUDY.replace("{defaults}", "".join(f"{k} = {toml_value(v)}\n" for k, v in train.items()))
    text = text.replace("{dataset}", "".join(f"{k} = {toml_value(v)}\n" for k, v in (dataset or {}).items()))
    with tempfile.TemporaryDirectory() as d:
        runs = expand(load_study(write_study(Path(d), text))).runs
    return next(r.config for r in runs if r.architecture == architecture)
