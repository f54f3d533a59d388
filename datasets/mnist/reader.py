"""MNIST and Fashion-MNIST from their IDX files (raw or gzipped), as distributed by LeCun et al.
and Zalando, or as torchvision's downloader leaves them in ROOT/MNIST/raw.

IDX: a big-endian header (two zero bytes, a type code, the number of dimensions, then each
dimension as uint32) followed by the values. Images are uint8 (type 0x08) with 3 dimensions,
labels uint8 with 1.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from ..arrays import ImageArray, carve
from ..errors import DataError
from . import MNISTOptions


def read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError) as e:  # gzip.BadGzipFile is an OSError; EOFError: a cut-off download
        raise DataError(f"{path}: cannot read ({e}); download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        raise DataError(f"{path}: not an IDX file of uint8 with {ndim} dimension(s) (bad header {data[:4].hex()})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} values (truncated download?)")
    return body.reshape(dims)


@functools.lru_cache(maxsize=2)
def _load(files: tuple[Path, ...]) -> tuple[np.ndarray, ...]:
    """Train images, train labels, test images, test labels (in ``MNISTOptions.FILES`` order)."""
    x_train, y_train, x_test, y_test = (read_idx(path, 3 if "images" in path.name else 1) for path in files)
    for x, y, part in ((x_train, y_train, files[0]), (x_test, y_test, files[2])):
        if len(x) != len(y):
            raise DataError(f"{part}: {len(x)} images but {len(y)} labels in its labels file")
    return x_train[:, None], y_train.astype(np.int64), x_test[:, None], y_test.astype(np.int64)


def build(opts: MNISTOptions, split: str) -> ImageArray:
    files = opts.locate()
    if files is None:
        raise DataError(opts.missing())
    x_train, y_train, x_test, y_test = _load(tuple(files[name] for name in opts.FILES))
    return carve(x_train, y_train, split, opts, test=(x_test, y_test))
