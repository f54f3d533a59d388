"""Class-folder trees: the options and the ``imagefolder`` registration (torch-free; the reader is
in ``reader.py``)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .._registry import Source, register
from ..options import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, Options


class ImageFolderOptions(Options):
    """Any class-folder tree: ROOT/train/<class>/*.jpg and ROOT/val/<class>/*, optionally ROOT/test/.

    ImageNet-1k, Tiny-ImageNet, stylized ImageNet, a melanoma set. Without ``test/``, ``val/`` is
    the test split (what ImageNet papers report) and validation is carved out of ``train/``."""

    NATIVE = (None, 3, 224, IMAGENET_MEAN, IMAGENET_STD)
    SPLIT_DIRS: ClassVar[tuple[str, ...]] = ("train", "val")
    PLAN_READS_DATA: ClassVar[bool] = True  # count_classes, when num_classes is not given

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


register(Source("imagefolder", ImageFolderOptions, "datasets.folder.reader:build",
                "any train/ + val/ (+ test/) class-folder tree: ImageNet, Tiny-ImageNet, ...",
                get="copy or link the extracted tree there (ImageNet: image-net.org, then one folder per class)"))
