"""scikit-learn's digits: 1,797 grey 8x8 images of handwritten digits, bundled with sklearn.

The train/val/test split is stratified and fixed (its own RNG, independent of the
run's seed), so every run of a study sees the same test images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .options import DigitsOptions

_SPLIT_SEED = 20240101  # fixed forever: changing it changes every digits result


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Stratified, seed-independent split: per class, a fixed permutation cut into test, val, train."""
    rng = np.random.RandomState(_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test, n_val = round(len(idx) * test_fraction), round(len(idx) * val_fraction)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def build(opts: DigitsOptions, split: str) -> TensorDataset:
    from sklearn.datasets import load_digits

    data = load_digits()
    images, labels = data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)
    idx = split_indices(labels, opts.val_fraction, opts.test_fraction)[split]
    if opts.subset is not None and split == "train":
        idx = np.concatenate([idx[labels[idx] == c][: opts.subset] for c in np.unique(labels)])
        idx.sort()
    info = opts.info()
    x = (torch.from_numpy(images[idx]).unsqueeze(1) - info.mean[0]) / info.std[0]
    return TensorDataset(x, torch.from_numpy(labels[idx]))
