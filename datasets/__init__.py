"""The dataset registry: ``build_dataset(source, *, root, split, **options)``.

A source name maps to its options class (torch-free, ``options.py``) and a reader
imported only when data is built. Importing this package never imports torch, so
``runner plan`` can validate options and check that data is on disk in milliseconds.
Batches for training come from ``datasets.batches`` (device-resident or DataLoader).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import DataError
from .options import (Augmentation, CIFAR10Options, CIFAR100Options, DatasetInfo, DigitsOptions, FashionMNISTOptions,
                      ImageFolderOptions, MNISTOptions, Options, check_auto_augment)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    name: str
    options: type[Options]
    reader: str  # "module:function", imported lazily
    summary: str
    get: str  # how to obtain the data, for the one-line error when it is missing
    downloadable: bool = False  # torchvision can fetch it: ``runner data download``


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> None:
    if source.name in _REGISTRY:
        raise ValueError(f"dataset source {source.name!r} registered twice")
    _REGISTRY[source.name] = source


_DOWNLOAD = "get it with `runner data download {name}`"
register(Source("digits", DigitsOptions, "datasets.digits:build", "scikit-learn's bundled 8x8 digits, no download",
                get="it ships with scikit-learn"))
register(Source("mnist", MNISTOptions, "datasets.mnist:build", "MNIST, IDX files", _DOWNLOAD, True))
register(Source("fashion_mnist", FashionMNISTOptions, "datasets.mnist:build", "Fashion-MNIST, IDX files", _DOWNLOAD, True))
register(Source("cifar10", CIFAR10Options, "datasets.cifar:build", "CIFAR-10, python pickles", _DOWNLOAD, True))
register(Source("cifar100", CIFAR100Options, "datasets.cifar:build", "CIFAR-100, python pickles", _DOWNLOAD, True))
register(Source("imagefolder", ImageFolderOptions, "datasets.folder:build",
                "any train/ + val/ (+ test/) class-folder tree: ImageNet, Tiny-ImageNet, ...",
                get="copy or link the extracted tree there (ImageNet: image-net.org, then one folder per class)"))


def list_sources() -> list[str]:
    return sorted(_REGISTRY)


def get_source(name: str) -> Source | None:
    return _REGISTRY.get(name)


def _options(source: str, root: str | None, options: dict) -> tuple[Source, Options]:
    src = _REGISTRY.get(source)
    if src is None:
        raise KeyError(f"unknown dataset source {source!r}; registered: {', '.join(list_sources())}")
    return src, src.options(root=root, **options)


def _problem(src: Source, opts: Options) -> str | None:
    problem = opts.missing()
    return None if problem is None else f"{problem}; {src.get.format(name=src.name)}"


def data_problem(source: str, *, root: str | None = None, **options) -> str | None:
    """Torch-free check that a dataset's files are in place: None, or one line saying what is
    missing, the layout expected and how to get it."""
    return _problem(*_options(source, root, options))


def build_dataset(source: str, *, root: str | None = None, split: str, **options):
    """Return ``(torch dataset, DatasetInfo)`` for one split of a registered source.

    Raises ``DataError`` (one line: path, layout, how to get it) when the data is missing."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    src, opts = _options(source, root, options)
    problem = _problem(src, opts)
    if problem is not None:
        raise DataError(problem)
    module_name, func = src.reader.split(":")
    return getattr(importlib.import_module(module_name), func)(opts, split), opts.info()


__all__ = ["Augmentation", "DataError", "DatasetInfo", "build_dataset", "check_auto_augment", "data_problem",
           "get_source", "list_sources", "register", "SPLITS"]
