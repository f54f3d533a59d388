"""Shared helpers: the real CLI in a subprocess, and tiny studies on scikit-learn digits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_STUDY = """
[study]
name = "tiny"
seeds = [0, 1]

[defaults]
epochs = {epochs}
batch_size = 128
lr = 3e-3
warmup_epochs = 0

[architectures.vit]
model = "vit"
patch_size = 4
dim = 16
depth = 1
heads = 2
mlp_dim = 32

[architectures.cnn]
model = "resnet18_cifar"
width = 4

[datasets.digits]
source = "digits"

[[matrix]]
name = "main"
architectures = ["vit", "cnn"]
datasets = ["digits"]

[[table]]
name = "accuracy"
rows = "architecture"
columns = "dataset"
metric = "test_acc"
"""


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``runner ARGS`` as a user types it, in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def write_study(path: Path, text: str | None = None, *, epochs: int = 2) -> Path:
    """Write a study file (the tiny one by default) into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    f = path / "experiments.toml"
    f.write_text(text if text is not None else TINY_STUDY.replace("{epochs}", str(epochs)))
    return f


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A study folder with 4 quick runs (2 architectures x 2 seeds on digits)."""
    write_study(tmp_path)
    return tmp_path
