"""CIFAR-10 and CIFAR-100: the options and the registrations (torch-free; the reader is in
``reader.py``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from .._registry import DOWNLOAD, Source, register
from ..options import CarvedOptions, DatasetInfo


def _first_missing(base: Path, names: list[str]) -> str | None:
    for name in names:
        if not (base / name).is_file():
            return name
    return None


class CIFAR10Options(CarvedOptions):
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


register(Source("cifar10", CIFAR10Options, "datasets.cifar.reader:build", "CIFAR-10, python pickles", DOWNLOAD, True))
register(Source("cifar100", CIFAR100Options, "datasets.cifar.reader:build", "CIFAR-100, python pickles", DOWNLOAD, True))
