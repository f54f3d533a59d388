"""Datasets small enough to hold whole in memory (digits, MNIST, CIFAR), and their fixed splits.

An ``ImageArray`` keeps the images as they are stored, uint8 and at their native size, so
the batch layer can move the whole split to the GPU once and crop, flip, resize and
normalize there. Indexed on its own it is an ordinary torch dataset of normalized images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

SPLIT_SEED = 20240101  # fixed forever: changing it changes every split, hence every result


class ImageArray(Dataset):
    """uint8 images ``(N, C, H, W)`` with values in ``0..max_value`` and int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, max_value: int, img_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N, C, H, W) images and N labels, got {images.dtype} "
                             f"{tuple(images.shape)} and {len(labels)}")
        self.images, self.labels = images, labels.long()
        self.max_value, self.img_size, self.mean, self.std = max_value, img_size, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.images[i:i + 1])[0], int(self.labels[i])

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 batch at native size -> float, resized to ``img_size``, normalized. The one
        place both data paths turn stored pixels into model inputs."""
        x = batch.float() / self.max_value
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", antialias=True,
                              align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        out = (x - mean) / std
        # With one channel, broadcasting can give channels-last strides that ``is_contiguous`` does
        # not see; convolutions then take another kernel (other numerics, other speed) than for a
        # plain batch. Standard strides keep every path on the same kernels.
        if out.stride() != torch.empty(out.shape, device="meta").stride():
            out = out.clone(memory_format=torch.contiguous_format)
        return out

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized images and labels, like a ``TensorDataset`` (convenient in notebooks)."""
        return self.normalize(self.images), self.labels


def stratified_split(labels: np.ndarray, fractions: dict[str, float]) -> dict[str, np.ndarray]:
    """Per class, one fixed permutation cut into the named parts in order; the rest is "train".

    Seed-independent: every run of a study, whatever its seed, sees the same parts."""
    rng = np.random.RandomState(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in [*fractions, "train"]}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, fraction in fractions.items():
            n = round(len(idx) * fraction)
            parts[name].append(idx[start:start + n])
            start += n
        parts["train"].append(idx[start:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def first_per_class(idx: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` indices of each class, in order: the ``subset`` option."""
    keep = np.concatenate([idx[labels[idx] == c][:n] for c in np.unique(labels[idx])])
    return np.sort(keep)


def keep_classes(idx: np.ndarray, labels: np.ndarray, classes: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(indices, their labels) restricted to ``classes``, label ``classes[i]`` becoming ``i``."""
    if classes is None:
        return idx, labels[idx].astype(np.int64)
    relabel = np.full(max(max(classes), int(labels.max())) + 1, -1)
    relabel[list(classes)] = np.arange(len(classes))
    new = relabel[labels[idx]]
    return idx[new >= 0], new[new >= 0].astype(np.int64)


def select(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, opts, max_value: int) -> ImageArray:
    """Wrap the chosen rows of a source as an ``ImageArray`` with the options' size and statistics
    (and only the images of the ``classes`` option, relabelled)."""
    info = opts.info()
    idx, y = keep_classes(idx, labels, opts.classes)
    return ImageArray(torch.from_numpy(np.ascontiguousarray(images[idx])), torch.from_numpy(y),
                      max_value=max_value, img_size=info.img_size, mean=info.mean, std=info.std)


def carve(images: np.ndarray, labels: np.ndarray, split: str, opts, *, test: tuple[np.ndarray, np.ndarray],
          max_value: int = 255) -> ImageArray:
    """train/val from a source's train part (val carved per class), test from its test part."""
    if split == "test":
        x, y = test
        return select(x, y, np.arange(len(y)), opts, max_value)
    idx = stratified_split(labels, {"val": opts.val_fraction})[split]
    if split == "train" and opts.subset is not None:
        idx = first_per_class(idx, labels, opts.subset)
    return select(images, labels, idx, opts, max_value)
