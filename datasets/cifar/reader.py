"""CIFAR-10 and CIFAR-100 from the python release (the pickles of cifar-*-python.tar.gz).

Each pickle is a dict with ``data`` (N x 3072 uint8, channel-major 32x32) and ``labels``
(CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100). This reader checks the layout
and the shapes; the official MD5 checksums are left to ``runner data verify``, so small
fixtures in the same format read through the same code.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np

from ..arrays import ImageArray, carve
from ..errors import DataError
from . import CIFAR10Options, CIFAR100Options


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR python pickle ({e})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path}: not a CIFAR batch (a pickled {type(entry).__name__}, expected a dict)")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise DataError(f"{path}: expected keys 'data' and '{label_key}', found {sorted(entry)}")
    data, labels = np.asarray(entry["data"], dtype=np.uint8), np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path}: expected N x 3072 images and N labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32), labels


@functools.lru_cache(maxsize=2)
def _load(folder: Path, train: tuple[str, ...], test: tuple[str, ...], label_key: str) -> tuple[np.ndarray, ...]:
    parts = [[read_batch(folder / name, label_key) for name in names] for names in (train, test)]
    return tuple(np.concatenate([p[i] for p in part]) for part in parts for i in (0, 1))


def build(opts: CIFAR10Options, split: str) -> ImageArray:
    label_key = "labels" if not isinstance(opts, CIFAR100Options) else f"{opts.labels}_labels"
    x_train, y_train, x_test, y_test = _load(opts.folder(), opts.TRAIN, opts.TEST, label_key)
    return carve(x_train, y_train, split, opts, test=(x_test, y_test))
