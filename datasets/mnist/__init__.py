"""MNIST and Fashion-MNIST: the options and the registrations (torch-free; the reader is in
``reader.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .._registry import DOWNLOAD, Source, register
from ..options import CarvedOptions


class MNISTOptions(CarvedOptions):
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


register(Source("mnist", MNISTOptions, "datasets.mnist.reader:build", "MNIST, IDX files", DOWNLOAD, True))
register(Source("fashion_mnist", FashionMNISTOptions, "datasets.mnist.reader:build", "Fashion-MNIST, IDX files",
                DOWNLOAD, True))
