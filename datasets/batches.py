"""Batches for the training loop, by one of two paths chosen from the data and the recipe.

- device: an in-memory split (digits, MNIST, CIFAR) goes to the device once as uint8; every
  batch is gathered by index, padded-cropped and flipped there, then normalized. No
  DataLoader, no worker processes, no host-to-device copy per step (airbench's recipe).
- loader: a DataLoader with worker processes and pinned memory, for image folders and for
  per-image augmentations (random-resized crops, timm's policies).

Both draw the order of an epoch, and the device path its crops and flips, from a generator
seeded by (seed, epoch): an epoch is the same whatever ran before it, so a resumed run
replays exactly the batches it would have seen.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .arrays import ImageArray
from .folder import ImageFiles
from .options import Augmentation
from .transforms import array_train_transform, folder_train_transform

PATHS = ("auto", "device", "loader")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def pad_crop_flip(x: torch.Tensor, aug: Augmentation, g: torch.Generator) -> torch.Tensor:
    """Per-image random pad-crop and horizontal flip of a uint8 batch, vectorized on its device.

    Offsets and flips are drawn on the CPU from ``g`` so CPU and GPU runs augment alike."""
    b, c, h, w = x.shape
    if aug.crop == "pad" and aug.crop_padding > 0:
        p = aug.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if aug.hflip > 0:
        flip = (torch.rand(b, generator=g) < aug.hflip).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class DeviceBatches:
    """The device path: ``(normalized images, labels)`` batches of an ``ImageArray`` held on ``device``."""

    path = "device"

    def __init__(self, array: ImageArray, batch_size: int, device: torch.device, *, shuffle: bool,
                 seed: int = 0, augmentation: Augmentation | None = None):
        if augmentation is not None and not augmentation.on_device:
            raise ValueError(f"the device path cannot apply {augmentation}; use the loader path")
        self.array, self.batch_size, self.shuffle, self.seed, self.epoch = array, batch_size, shuffle, seed, 0
        self.aug = augmentation if augmentation is not None and (augmentation.crop != "none" or augmentation.hflip) else None
        self.images, self.labels = array.images.to(device), array.labels.to(device)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.labels)
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            x = self.images[idx]
            if self.aug is not None:
                x = pad_crop_flip(x, self.aug, g)
            yield self.array.normalize(x), self.labels[idx]


class _Transformed(Dataset):
    """An ``ImageArray`` seen image by image through a per-image train transform."""

    def __init__(self, array: ImageArray, transform):
        self.array, self.transform = array, transform

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int):
        return self.transform(self.array.images[i]), int(self.array.labels[i])


class LoaderBatches:
    """The loader path: a DataLoader reseeded every epoch (order and worker seeds), pinned memory on CUDA."""

    path = "loader"

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, *, shuffle: bool, seed: int = 0,
                 workers: int | None = None):
        self.seed, self.epoch = seed, 0
        self.generator = epoch_generator(seed, 0)
        workers = loader_workers() if workers is None else workers
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=self.generator,
                                 num_workers=workers, pin_memory=device.type == "cuda",
                                 prefetch_factor=4 if workers else None)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed * 100_003 + self.epoch)
        if self.loader.num_workers:  # each worker process is seeded from the generator
            yield from self.loader
            return
        # In this process the per-image transforms draw from the global RNGs (torch, random,
        # numpy): give them a private state seeded by (seed, epoch), swapped in around each batch,
        # so the epoch replays exactly and the model's own randomness is left alone.
        private = _seeded_rng_states(self.seed * 100_003 + self.epoch)
        batches = iter(self.loader)
        while True:
            outer = _rng_states()
            _set_rng_states(private)
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                private = _rng_states()
                _set_rng_states(outer)
            yield batch


def _rng_states() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _set_rng_states(states: tuple) -> None:
    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])


def _seeded_rng_states(seed: int) -> tuple:
    outer = _rng_states()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    states = _rng_states()
    _set_rng_states(outer)
    return states


def loader_workers() -> int:
    """DataLoader processes per run: ``RUNNER_LOADER_WORKERS``, else the cores this process may use, up to 8."""
    env = os.environ.get("RUNNER_LOADER_WORKERS")
    if env is not None:
        return max(0, int(env))
    return min(8, len(os.sched_getaffinity(0)))


def choose_path(dataset: Dataset, augmentation: Augmentation | None) -> str:
    if isinstance(dataset, ImageArray) and (augmentation is None or augmentation.on_device):
        return "device"
    return "loader"


def make_batches(dataset: Dataset, batch_size: int, device: torch.device | str, *, shuffle: bool, seed: int = 0,
                 augmentation: Augmentation | None = None, path: str = "auto", workers: int | None = None):
    """Batches of one split; ``augmentation`` only for training. ``path`` forces a path (tests, bench)."""
    device = torch.device(device)
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if path == "auto":
        path = choose_path(dataset, augmentation)
    if path == "device":
        if not isinstance(dataset, ImageArray):
            raise ValueError("the device path needs an in-memory dataset (ImageArray)")
        return DeviceBatches(dataset, batch_size, device, shuffle=shuffle, seed=seed, augmentation=augmentation)
    if isinstance(dataset, ImageArray):
        dataset = _Transformed(dataset, array_train_transform(dataset, augmentation or Augmentation()))
    elif isinstance(dataset, ImageFiles) and augmentation is not None:
        dataset = dataset.with_transform(folder_train_transform(dataset.opts.info(), dataset.opts.crop_pct, augmentation))
    return LoaderBatches(dataset, batch_size, device, shuffle=shuffle, seed=seed, workers=workers)


def make_mixer(mixup: float, cutmix: float, prob: float, switch_prob: float, label_smoothing: float,
               num_classes: int):
    """timm's Mixup/CutMix on whole batches (soft targets that sum to 1, label smoothing folded
    in), or None when the recipe mixes nothing."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode="batch",
                 label_smoothing=label_smoothing, num_classes=num_classes)
