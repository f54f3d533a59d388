"""scikit-learn's digits: 1,797 grey 8x8 images of handwritten digits, bundled with sklearn.

The train/val/test split is stratified and fixed (its own RNG, independent of the
run's seed), so every run of a study sees the same test images.
"""

from __future__ import annotations

import numpy as np

from ..arrays import ImageArray, first_per_class, select, stratified_split
from . import DigitsOptions


def build(opts: DigitsOptions, split: str) -> ImageArray:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images.astype(np.uint8)[:, None]  # pixel values are the integers 0..16
    labels = data.target.astype(np.int64)
    idx = stratified_split(labels, {"test": opts.test_fraction, "val": opts.val_fraction})[split]
    if opts.subset is not None and split == "train":
        idx = first_per_class(idx, labels, opts.subset)
    return select(images, labels, idx, opts, max_value=16)
