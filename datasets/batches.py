"""Batches for the training loop, by one of two paths chosen from the data and the recipe.

- device: an in-memory split (digits, MNIST, CIFAR) goes to the device once as uint8; every
  batch is gathered by index, padded-cropped and flipped there, then normalized. No
  DataLoader, no worker processes, no host-to-device copy per step (airbench's recipe).
- loader: a DataLoader with worker processes and pinned memory, for image folders and for
  per-image augmentations (random-resized crops, timm's policies).

Both draw the order of an epoch from a generator seeded by (seed, epoch); the device path
draws its crops and flips from the same generator, the loader path seeds each image's
transforms from (seed, epoch, image index), whatever worker process loads it. So an epoch
is the same whatever ran before it and however many loader workers there are, and
``set_epoch(epoch, start=k)`` resumes an epoch at batch k with exactly the batches an
uninterrupted run would have seen next (checkpoints taken mid-epoch rely on this).
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .arrays import ImageArray
from .folder import ImageFiles
from .options import Augmentation
from .transforms import array_train_transform, folder_train_transform

PATHS = ("auto", "device", "loader")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def draw_pad_crop_flip(b: int, aug: Augmentation, g: torch.Generator) -> tuple:
    """The random part of ``pad_crop_flip`` for a batch of ``b``: (dy, dx, flip), drawn on the CPU
    from ``g`` so CPU and GPU runs augment alike; skipping a batch means drawing and dropping it."""
    pad = aug.crop == "pad" and aug.crop_padding > 0
    dy = torch.randint(0, 2 * aug.crop_padding + 1, (b,), generator=g) if pad else None
    dx = torch.randint(0, 2 * aug.crop_padding + 1, (b,), generator=g) if pad else None
    flip = torch.rand(b, generator=g) < aug.hflip if aug.hflip > 0 else None
    return dy, dx, flip


def pad_crop_flip(x: torch.Tensor, aug: Augmentation, g: torch.Generator) -> torch.Tensor:
    """Per-image random pad-crop and horizontal flip of a uint8 batch, vectorized on its device."""
    b, c, h, w = x.shape
    dy, dx, flip = draw_pad_crop_flip(b, aug, g)
    if dy is not None:
        p = aug.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy, dx = dy.to(x.device), dx.to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip is not None:
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    return x


class DeviceBatches:
    """The device path: ``(normalized images, labels)`` batches of an ``ImageArray`` held on ``device``."""

    path = "device"

    def __init__(self, array: ImageArray, batch_size: int, device: torch.device, *, shuffle: bool,
                 seed: int = 0, augmentation: Augmentation | None = None):
        if augmentation is not None and not augmentation.on_device:
            raise ValueError(f"the device path cannot apply {augmentation}; use the loader path")
        self.array, self.batch_size, self.shuffle, self.seed, self.epoch, self.start = array, batch_size, shuffle, seed, 0, 0
        self.aug = augmentation if augmentation is not None and (augmentation.crop != "none" or augmentation.hflip) else None
        self.images, self.labels = array.images.to(device), array.labels.to(device)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration yields ``epoch``'s batches from batch ``start`` on."""
        self.epoch, self.start = epoch, start

    def __iter__(self):
        n = len(self.labels)
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(0, n, self.batch_size):
            if i < self.start * self.batch_size:  # resumed mid-epoch: consume this batch's draws only
                if self.aug is not None:
                    draw_pad_crop_flip(min(self.batch_size, n - i), self.aug, g)
                continue
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


class _EpochOrder(Sampler):
    """The image order of an epoch, from (seed, epoch), starting at image ``skip``."""

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle, self.seed, self.epoch, self.skip = n, shuffle, seed, 0, 0

    def __len__(self) -> int:
        return self.n - self.skip

    def __iter__(self):
        order = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle else range(self.n)
        return iter(order[self.skip:].tolist() if self.shuffle else order[self.skip:])


class _SeededPerImage(Dataset):
    """Seeds the global RNGs (torch CPU, random, numpy) that per-image transforms draw from
    with (seed, epoch, index) around each image, and puts the caller's state back after: an
    image's augmentation depends on nothing else, and the model's randomness is left alone."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        outer = torch.get_rng_state(), random.getstate(), np.random.get_state()
        s = (self.seed * 100_003 + self.epoch) * 1_000_003 + i
        torch.default_generator.manual_seed(s)  # not torch.manual_seed: that would reseed CUDA too
        random.seed(s)
        np.random.seed(s % 2**32)
        try:
            return self.dataset[i]
        finally:
            torch.set_rng_state(outer[0])
            random.setstate(outer[1])
            np.random.set_state(outer[2])


class LoaderBatches:
    """The loader path: a DataLoader over the epoch's order, pinned memory on CUDA. Worker
    processes are started per epoch, so each receives the epoch number with the dataset."""

    path = "loader"

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, *, shuffle: bool, seed: int = 0,
                 workers: int | None = None):
        self.batch_size, self.n = batch_size, len(dataset)
        self.dataset = _SeededPerImage(dataset, seed) if shuffle else dataset
        self.order = _EpochOrder(len(dataset), shuffle, seed)
        workers = loader_workers() if workers is None else workers
        # the generator only seeds the workers' base seed, so the global torch RNG is never drawn from
        self.loader = DataLoader(self.dataset, batch_size=batch_size, sampler=self.order, num_workers=workers,
                                 generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
                                 prefetch_factor=4 if workers else None)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration yields ``epoch``'s batches from batch ``start`` on."""
        self.order.epoch, self.order.skip = epoch, min(self.n, start * self.batch_size)
        if isinstance(self.dataset, _SeededPerImage):
            self.dataset.epoch = epoch

    def __iter__(self):
        return iter(self.loader)


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
