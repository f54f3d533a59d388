"""The training recipe: every key of ``[defaults]`` (and of ``train.*`` dotted keys).

Torch-free so ``runner plan`` validates recipes without importing torch; the
training loop (``runner/train.py``) reads an instance of ``Recipe``. Every field
here is part of a run's identity: changing it makes a new run. A field at its default
is left out of the id, so adding a field whose default keeps the old behaviour does not
retrain anything (``tests/test_identity.py`` pins the defaults).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datasets import Augmentation, check_auto_augment


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

    # augmentation of the training split (see datasets.Augmentation); evaluation is never augmented
    crop: Literal["none", "pad", "resized"] = Field(
        "none", description='"pad": pad and crop back at random (CIFAR); "resized": random-resized crop (ImageNet)')
    crop_padding: int = Field(4, ge=0, description='pixels of zero padding for crop = "pad"')
    crop_scale: float = Field(0.08, gt=0.0, le=1.0, description='smallest area share of crop = "resized"')
    hflip: float = Field(0.0, ge=0.0, le=1.0, description="probability of a horizontal flip")
    auto_augment: str | None = Field(None, description='timm policy: "rand-m9-mstd0.5-inc1", "original", ...')
    mixup: float = Field(0.0, ge=0.0, description="Mixup alpha; 0 = off")
    cutmix: float = Field(0.0, ge=0.0, description="CutMix alpha; 0 = off")
    mix_prob: float = Field(1.0, gt=0.0, le=1.0, description="probability a batch is mixed")
    mix_switch_prob: float = Field(0.5, ge=0.0, le=1.0, description="share of mixed batches that use CutMix when both are on")

    @field_validator("auto_augment")
    @classmethod
    def _known_policy(cls, value):
        problem = value is not None and check_auto_augment(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _even_batches(self):
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ValueError(f"batch_size: Mixup/CutMix pair each image with another, so it must be even, "
                             f"got {self.batch_size}")
        return self

    def augmentation(self) -> Augmentation:
        return Augmentation(crop=self.crop, crop_padding=self.crop_padding, crop_scale=self.crop_scale,
                            hflip=self.hflip, auto_augment=self.auto_augment)

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0
