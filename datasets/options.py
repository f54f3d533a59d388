"""Options of every dataset source, torch-free so ``runner plan`` validates them quickly.

``info()`` tells the shape of the data (classes, channels, image size) without
reading it, so the plan can refuse a patch size that does not divide the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Options(BaseModel):
    """Base: unknown keys and loose types are refused. ``root`` locates data, it does not define it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    root: str | None = None
    subset: int | None = Field(None, ge=1, description="keep the first N training images per class")

    def info(self) -> DatasetInfo:
        raise NotImplementedError


class DigitsOptions(Options):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): no download, the demo."""

    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)

    def info(self) -> DatasetInfo:
        # Pixel values 0..16 scaled to [0, 1]; mean/std of the whole set, fixed so ids stay stable.
        return DatasetInfo(num_classes=10, in_chans=1, img_size=8, mean=(0.3053,), std=(0.3760,))
