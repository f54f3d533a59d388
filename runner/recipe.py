"""The training recipe: every key of ``[defaults]`` (and of ``train.*`` dotted keys).

Torch-free so ``runner plan`` validates recipes without importing torch; the
training loop (``runner/train.py``) reads an instance of ``Recipe``. Every field
here is part of a run's identity: changing it makes a new run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0, description="not applied to norms and biases")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    warmup_epochs: float = Field(0.0, ge=0.0, description="linear warm-up from 0, then cosine")
    min_lr: float = Field(0.0, ge=0.0, description="floor of the cosine schedule")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm")
    select: Literal["best", "last"] = Field(
        "best", description="which checkpoint test_acc/test_loss report: best validation accuracy or last epoch"
    )
