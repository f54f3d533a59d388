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

# pretrain on digits 0-4, then fine-tune on 5-9 from those weights (tests/test_stages.py, test_slurm.py)
STAGED_STUDY = """
[study]
name = "stages"
seeds = [0]

[defaults]
epochs = EPOCHS
batch_size = 64
lr = 3e-3

[architectures.cnn]
model = "resnet18_cifar"
width = 4

[datasets.low]
source = "digits"
classes = [0, 1, 2, 3, 4]

[datasets.high]
source = "digits"
classes = [5, 6, 7, 8, 9]

[[matrix]]
name = "pretrain"
architectures = ["cnn"]
datasets = ["low"]

[[matrix]]
name = "finetune"
architectures = ["cnn"]
datasets = ["high"]
set = { FINETUNE }
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


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py); skipped, with the reason, where
    none can be started."""
    from postgres import ExternalServer, PostgresServer

    if os.environ.get("RUNNER_TEST_POSTGRES_URL"):
        yield ExternalServer(os.environ["RUNNER_TEST_POSTGRES_URL"])
        return
    why = PostgresServer.missing()
    if why:
        pytest.skip(why)
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """The store's database: a SQLite file, then a fresh database on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runner.db'}"
    return request.getfixturevalue("postgres").new_database()
