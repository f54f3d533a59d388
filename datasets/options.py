"""What every dataset source's options share, torch-free so ``runner plan`` validates them quickly.

Each source declares its options class in its package's ``__init__.py`` (``datasets/cifar/``
...), a subclass of ``Options`` here. Each options class knows, without reading any image:
- ``info()``: the shape of the data (classes, channels, image size, normalization), so the
  plan can refuse a patch size that does not divide the image;
- ``missing()``: whether the files are where the reader will look, and if not, one line
  naming the path, the layout expected and how to get it (``runner plan`` warns with it,
  ``runner launch`` refuses with it, a worker fails with it);
- ``train_images()``: about how many images an epoch trains on (the launcher's run-length estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int | None  # None only for an image folder not yet on disk
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Options(BaseModel):
    """Base: unknown keys and loose types are refused. ``root`` locates data, it does not define it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    # what the source is before any option: classes, channels, side, mean, std (of its train split)
    NATIVE: ClassVar[tuple[int | None, int, int, tuple[float, ...], tuple[float, ...]]]
    NEEDS_ROOT: ClassVar[bool] = True
    # info() reads the data's folder (an image folder counts its classes): a plan of such a
    # source is expanded anew each time, never taken from the user cache (runner/cache.py)
    PLAN_READS_DATA: ClassVar[bool] = False

    root: str | None = Field(None, description="folder holding the data (relative to the study file)")
    subset: int | None = Field(None, ge=1, description="keep the first N training images per class")
    classes: list[int] | None = Field(None, min_length=2, description="keep only these labels (of the source), "
                                      "relabelled 0..k-1 in this order: digits 0-4 for one stage, 5-9 for the next")
    img_size: int | None = Field(None, ge=4, description="side the images are resized to; default the native size")
    mean: list[float] | None = Field(None, description="per-channel mean for normalization; default the dataset's")
    std: list[float] | None = Field(None, description="per-channel std for normalization; default the dataset's")

    @model_validator(mode="after")
    def _check(self):
        chans = self.NATIVE[1]
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != chans:
                raise ValueError(f"{key}: give {chans} value(s), one per channel, got {len(value)}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std: values must be positive")
        if self.classes is not None:
            native = self.source_info().num_classes if self.NATIVE[0] is not None else None  # folders: at build
            if len(set(self.classes)) != len(self.classes):
                raise ValueError("classes: each label may appear once")
            bad = [c for c in self.classes if c < 0 or (native is not None and c >= native)]
            if bad:
                raise ValueError(f"classes: {bad[0]} is no label of this source; labels run from 0 to {native - 1}")
        if self.NEEDS_ROOT and not self.root:
            raise ValueError(f'root: required, the folder holding the data, e.g. root = "data/{self.source_hint()}"')
        return self

    @classmethod
    def source_hint(cls) -> str:
        return cls.__name__.removesuffix("Options").lower()

    def info(self) -> DatasetInfo:
        """The data as the runs see it: the source's shape, with ``classes`` applied."""
        info = self.source_info()
        return info if self.classes is None else replace(info, num_classes=len(self.classes))

    def source_info(self) -> DatasetInfo:
        classes, chans, side, mean, std = self.NATIVE
        return DatasetInfo(num_classes=classes, in_chans=chans, img_size=self.img_size or side,
                           mean=tuple(self.mean) if self.mean is not None else mean,
                           std=tuple(self.std) if self.std is not None else std)

    def missing(self) -> str | None:
        """None when the files are in place, else what is wrong and how to fix it, in one line."""
        return None

    def train_images(self) -> int | None:
        """About how many images an epoch trains on, read from no image (the launcher ranks runs
        by expected length with it); None when unknown."""
        n = self._train_split_size()
        classes = self.info().num_classes
        if n is not None and self.subset is not None and classes:
            n = min(n, self.subset * classes)
        return n

    def _train_split_size(self) -> int | None:
        return None


class CarvedOptions(Options):
    """Sources shipped as train + test: validation is carved out of train, per class, by a
    fixed RNG of its own, so every seed and every run sees the same validation images."""

    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of train held out for validation")
    SHIPPED_TRAIN: ClassVar[int]  # images of the train file(s) before validation is carved out

    def _train_split_size(self) -> int:
        return round(self.SHIPPED_TRAIN * (1 - self.val_fraction))
