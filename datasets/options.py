"""Options of every dataset source, torch-free so ``runner plan`` validates them quickly.

Each options class knows, without reading any image:
- ``info()``: the shape of the data (classes, channels, image size, normalization), so the
  plan can refuse a patch size that does not divide the image;
- ``missing()``: whether the files are where the reader will look, and if not, one line
  naming the path, the layout expected and how to get it (``runner plan`` warns with it,
  ``runner launch`` refuses with it, a worker fails with it);
- ``train_images()``: about how many images an epoch trains on (the launcher's run-length estimate).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal

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

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # what the source is before any option: classes, channels, side, mean, std (of its train split)
    NATIVE: ClassVar[tuple[int | None, int, int, tuple[float, ...], tuple[float, ...]]]
    NEEDS_ROOT: ClassVar[bool] = True

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


class DigitsOptions(Options):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): no download, the demo."""

    # Pixel values 0..16 scaled to [0, 1]; mean/std of the whole set, fixed so ids stay stable.
    NATIVE = (10, 1, 8, (0.3053,), (0.3760,))
    NEEDS_ROOT = False

    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)

    def _train_split_size(self) -> int:
        return round(1797 * (1 - self.val_fraction - self.test_fraction))


class _CarvedOptions(Options):
    """Sources shipped as train + test: validation is carved out of train, per class, by a
    fixed RNG of its own, so every seed and every run sees the same validation images."""

    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of train held out for validation")
    SHIPPED_TRAIN: ClassVar[int]  # images of the train file(s) before validation is carved out

    def _train_split_size(self) -> int:
        return round(self.SHIPPED_TRAIN * (1 - self.val_fraction))


def _first_missing(base: Path, names: list[str]) -> str | None:
    for name in names:
        if not (base / name).is_file():
            return name
    return None


class MNISTOptions(_CarvedOptions):
    """MNIST (LeCun et al.): 60,000 + 10,000 grey 28x28 digits in IDX files, raw or gzipped."""

    NATIVE = (10, 1, 28, (0.1307,), (0.3081,))
    SHIPPED_TRAIN = 60_000
    FOLDER: ClassVar[str] = "MNIST"  # torchvision's download puts the files in ROOT/MNIST/raw
    FILES: ClassVar[tuple[str, ...]] = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def locate(self) -> dict[str, Path] | None:
        """The four IDX files (``.gz`` or not), in ROOT or ROOT/<FOLDER>/raw; None if incomplete."""
        for base in (Path(self.root), Path(self.root) / self.FOLDER / "raw"):
            found = {}
            for name in self.FILES:
                path = next((p for p in (base / name, base / f"{name}.gz") if p.is_file()), None)
                if path is None:
                    break
                found[name] = path
            if len(found) == len(self.FILES):
                return found
        return None

    def missing(self) -> str | None:
        if self.locate() is not None:
            return None
        return (f"no {self.FOLDER} IDX files at {self.root}: expected {', '.join(self.FILES)} (or their .gz) "
                f"in {self.root} or {Path(self.root) / self.FOLDER / 'raw'}")


class FashionMNISTOptions(MNISTOptions):
    """Fashion-MNIST (Xiao et al.): MNIST's format and sizes, 10 kinds of clothing."""

    NATIVE = (10, 1, 28, (0.2860,), (0.3530,))
    FOLDER = "FashionMNIST"

    @classmethod
    def source_hint(cls) -> str:
        return "fashion_mnist"


class CIFAR10Options(_CarvedOptions):
    """CIFAR-10 (Krizhevsky): 50,000 + 10,000 colour 32x32 images, the python pickle release."""

    NATIVE = (10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    SHIPPED_TRAIN = 50_000
    FOLDER: ClassVar[str] = "cifar-10-batches-py"
    TRAIN: ClassVar[tuple[str, ...]] = tuple(f"data_batch_{i}" for i in range(1, 6))
    TEST: ClassVar[tuple[str, ...]] = ("test_batch",)
    META: ClassVar[str] = "batches.meta"

    def folder(self) -> Path:
        return Path(self.root) / self.FOLDER

    def missing(self) -> str | None:
        absent = _first_missing(self.folder(), [*self.TRAIN, *self.TEST, self.META])
        if absent is None:
            return None
        return (f"{absent} not found in {self.folder()}: expected the extracted python release "
                f"({self.FOLDER}/ with {', '.join(self.TRAIN + self.TEST)} and {self.META})")


class CIFAR100Options(CIFAR10Options):
    """CIFAR-100: CIFAR-10's images and sizes with 100 fine (or 20 coarse) classes."""

    NATIVE = (100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    FOLDER = "cifar-100-python"
    TRAIN = ("train",)
    TEST = ("test",)
    META = "meta"

    labels: Literal["fine", "coarse"] = Field("fine", description="100 fine classes or 20 superclasses")

    def source_info(self) -> DatasetInfo:
        info = super().source_info()
        return info if self.labels == "fine" else replace(info, num_classes=20)


class ImageFolderOptions(Options):
    """Any class-folder tree: ROOT/train/<class>/*.jpg and ROOT/val/<class>/*, optionally ROOT/test/.

    ImageNet-1k, Tiny-ImageNet, stylized ImageNet, a melanoma set. Without ``test/``, ``val/`` is
    the test split (what ImageNet papers report) and validation is carved out of ``train/``."""

    NATIVE = (None, 3, 224, IMAGENET_MEAN, IMAGENET_STD)
    SPLIT_DIRS: ClassVar[tuple[str, ...]] = ("train", "val")

    img_size: int = Field(224, ge=4, description="side of the crops the model sees")
    crop_pct: float = Field(0.875, gt=0.0, le=1.0, description="evaluation: resize to img_size/crop_pct, center crop")
    val_per_class: int = Field(50, ge=1, description="images per class carved out of train/ when there is no test/")
    num_classes: int | None = Field(None, ge=2, description="checked against the class folders; default their count")

    def source_info(self) -> DatasetInfo:
        classes = self.num_classes if self.num_classes is not None else self.count_classes()
        return replace(super().source_info(), num_classes=classes)

    def count_classes(self) -> int | None:
        train = Path(self.root) / "train"
        try:
            return sum(1 for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return None

    def _train_split_size(self) -> int | None:
        """Files in train/'s class folders, less the validation carve-out when there is no test/."""
        root = Path(self.root)
        try:
            dirs = [e.path for e in os.scandir(root / "train") if e.is_dir() and not e.name.startswith(".")]
            files = sum(1 for d in dirs for e in os.scandir(d) if e.is_file())
        except OSError:
            return None
        return files if (root / "test").is_dir() else max(0, files - self.val_per_class * len(dirs))

    def missing(self) -> str | None:
        for name in self.SPLIT_DIRS:
            path = Path(self.root) / name
            if not path.is_dir():
                return (f"no {name}/ folder in {self.root}: expected {self.root}/train/<class>/<image> and "
                        f"{self.root}/val/<class>/<image> (optionally test/ too), one folder per class")
        return None


# ---------------------------------------------------------------- augmentation strings

# timm's auto-augment config strings: "rand-m9-mstd0.5-inc1" (RandAugment), "augmix-m5-w4-d2",
# "original" / "originalr" / "v0" / "v0r" (AutoAugment policies, e.g. "original-mstd0.5"), "3a" (3-Augment).
_NUM = r"\d[\d.]*"
_AUTO_AUGMENT = re.compile(  # the sections timm's parsers accept; anything else would fail in the worker
    rf"^(?:rand(?:-(?:(?:mstd|mmax|inc|m|n|p){_NUM}|t[a-z_]+))*"
    rf"|augmix(?:-(?:mstd|m|w|d|a|b){_NUM})*"
    rf"|(?:original|originalr|v0|v0r|3a)(?:-mstd{_NUM})*)$")


def check_auto_augment(text: str) -> str | None:
    """None when ``text`` is a config string timm's ``create_transform(auto_augment=...)`` takes."""
    if _AUTO_AUGMENT.match(text):
        return None
    return (f'"{text}" is not a timm auto-augment string; use e.g. "rand-m9-mstd0.5-inc1" (RandAugment), '
            f'"original" (AutoAugment), "augmix-m5-w4-d2" or "3a"')


@dataclass(frozen=True)
class Augmentation:
    """What the training split goes through; the recipe's keys of the same names.

    crop: "none"; "pad" (pad ``crop_padding`` px of zeros, crop back at random: CIFAR style);
    "resized" (random-resized crop, area share in ``[crop_scale, 1]``: ImageNet style).
    hflip: probability of a horizontal flip. auto_augment: a timm config string or None."""

    crop: str = "none"
    crop_padding: int = 4
    crop_scale: float = 0.08
    hflip: float = 0.0
    auto_augment: str | None = None

    @property
    def on_device(self) -> bool:
        """Whether the GPU-resident path can apply it batch-wise: pad-crop and flip can,
        random-resized crops and timm's PIL policies go through DataLoader workers."""
        return self.crop in ("none", "pad") and self.auto_augment is None
