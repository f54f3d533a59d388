"""Class-folder trees (ImageNet-1k, Tiny-ImageNet, stylized ImageNet, any ``train/`` + ``val/``).

Files are listed with torchvision's ``find_classes``/``make_dataset`` and decoded with PIL in
DataLoader workers. Without a ``test/`` folder, ``val/`` is the test split and validation is
``val_per_class`` images per class carved out of ``train/`` by a fixed RNG.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from ..arrays import SPLIT_SEED, first_per_class
from ..errors import DataError
from . import ImageFolderOptions


class ImageFiles(Dataset):
    """(path, label) pairs decoded to RGB and passed through ``transform``."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable | None,
                 opts: ImageFolderOptions):
        self.samples, self.classes, self.transform, self.opts = samples, classes, transform, opts

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[i]
        image = default_loader(path)
        return (self.transform(image) if self.transform is not None else image), label

    def with_transform(self, transform: Callable | None) -> "ImageFiles":
        return ImageFiles(self.samples, self.classes, transform, self.opts)

    @property
    def labels(self) -> np.ndarray:
        return np.array([label for _, label in self.samples], dtype=np.int64)


@functools.lru_cache(maxsize=8)
def list_folder(folder: Path) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """Classes (sorted folder names) and their image files; listed once per process."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, index = find_classes(str(folder))
        samples = make_dataset(str(folder), index, extensions=IMG_EXTENSIONS, allow_empty=True)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"{folder}: cannot list class folders ({e})") from None
    if not samples:
        raise DataError(f"{folder}: no images ({', '.join(IMG_EXTENSIONS)}) in its class folders")
    return tuple(classes), tuple(samples)


def build(opts: ImageFolderOptions, split: str) -> ImageFiles:
    from ..transforms import eval_transform

    root = Path(opts.root)
    classes, train = list_folder(root / "train")
    if opts.num_classes is not None and opts.num_classes != len(classes):
        raise DataError(f"{root / 'train'}: {len(classes)} class folders, but num_classes = {opts.num_classes}")
    has_test = (root / "test").is_dir()
    if split == "test" or (split == "val" and has_test):
        samples = _matching(root / ("test" if split == "test" and has_test else "val"), classes)
    else:
        labels = np.array([label for _, label in train], dtype=np.int64)
        idx = np.arange(len(train)) if has_test else _carve_per_class(labels, opts.val_per_class)[split]
        if split == "train" and opts.subset is not None:
            idx = first_per_class(idx, labels, opts.subset)
        samples = [train[i] for i in idx]
    if opts.classes is not None:
        if max(opts.classes) >= len(classes):
            raise DataError(f"{root / 'train'}: {len(classes)} class folders, so no label {max(opts.classes)} "
                            "(option classes)")
        relabel = {c: i for i, c in enumerate(opts.classes)}
        samples = [(path, relabel[label]) for path, label in samples if label in relabel]
        classes = [classes[c] for c in opts.classes]
    return ImageFiles(list(samples), list(classes), eval_transform(opts.info(), opts.crop_pct), opts)


def _matching(folder: Path, classes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """A val/ or test/ tree must name the same classes as train/, or labels would mean other things."""
    found, samples = list_folder(folder)
    if found != classes:
        extra, absent = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise DataError(f"{folder}: class folders differ from train/ "
                        f"(not in train: {extra[:3] or 'none'}; missing: {absent[:3] or 'none'})")
    return samples


def _carve_per_class(labels: np.ndarray, per_class: int) -> dict[str, np.ndarray]:
    """``per_class`` images of every class out of train/ (at most half of a small class), chosen
    by a fixed RNG of their own, so every run validates on the same images."""
    rng = np.random.RandomState(SPLIT_SEED)
    val = np.sort(np.concatenate([idx[:min(per_class, len(idx) // 2)] for idx in
                                  (rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels))]))
    return {"train": np.setdiff1d(np.arange(len(labels)), val), "val": val}
