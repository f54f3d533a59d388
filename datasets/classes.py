"""The class names of a dataset, in label order: what a probe matches other label sets against
(a cue-conflict folder's categories, a WordNet mapping). No torch; reads at most a small file."""

from __future__ import annotations

import pickle
from pathlib import Path

from .cifar import CIFAR10Options, CIFAR100Options
from .errors import DataError
from .folder import ImageFolderOptions
from .options import Options

DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_names(source: str, opts: Options) -> tuple[str, ...]:
    """Label i's name, after the ``classes`` option."""
    names = source_class_names(source, opts)
    return names if opts.classes is None else tuple(names[c] for c in opts.classes)


def source_class_names(source: str, opts: Options) -> tuple[str, ...]:
    """Label i's name of the source: digits for digits and MNIST, the release's names for Fashion-MNIST and CIFAR,
    the (sorted) class folder names of an image folder."""
    if source in ("digits", "mnist"):
        return DIGITS
    if source == "fashion_mnist":
        return FASHION
    if isinstance(opts, CIFAR10Options):
        key = "label_names" if not isinstance(opts, CIFAR100Options) else f"{opts.labels}_label_names"
        names = _meta_names(opts.folder() / opts.META, key)
        if names is not None:
            return names
        if not isinstance(opts, CIFAR100Options):
            return CIFAR10
        raise DataError(f"{opts.folder() / opts.META}: no {key} in it, so its class names are unknown")
    if isinstance(opts, ImageFolderOptions):
        train = Path(opts.root) / "train"
        try:
            return tuple(sorted(e.name for e in train.iterdir() if e.is_dir()))
        except OSError as e:
            raise DataError(f"{train}: cannot list its class folders ({e})") from None
    raise DataError(f"{source}: class names unknown")


def _meta_names(path: Path, key: str) -> tuple[str, ...] | None:
    try:
        with open(path, "rb") as f:
            meta = pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError):
        return None
    names = meta.get(key) if isinstance(meta, dict) else None
    return tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names) if names else None
