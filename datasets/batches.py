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
from .augmentation import Augmentation
from .folder.reader import ImageFiles
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


def shard_bounds(m: int, rank: int, world: int) -> tuple[int, int]:
    """The part of a global batch of ``m`` images that process ``rank`` of ``world`` takes: contiguous,
    sizes differing by one at most. With one process, the whole batch."""
    base, extra = divmod(m, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def trained_shares(m: int, world: int, even: bool) -> list[int]:
    """Images each process trains of a global batch of ``m``: its ``shard_bounds`` part, less an
    odd image when batches are mixed (Mixup/CutMix pair images). Every process computes the same list."""
    sizes = [hi - lo for lo, hi in (shard_bounds(m, r, world) for r in range(world))]
    return [n - n % 2 for n in sizes] if even else sizes


def global_batches(n: int, batch_size: int, world: int, drop_small: bool) -> int:
    """Global batches of an epoch; with ``drop_small`` a last batch too small to give every
    process an image is dropped (a process without a batch would stall the others)."""
    count = math.ceil(n / batch_size)
    return count - 1 if drop_small and count and n - (count - 1) * batch_size < world else count


def pad_crop_flip(x: torch.Tensor, aug: Augmentation, g: torch.Generator, draws: tuple | None = None) -> torch.Tensor:
    """Per-image random pad-crop and horizontal flip of a uint8 batch, vectorized on its device;
    ``draws``: this batch's part of the draws of a global batch (distributed runs)."""
    b, c, h, w = x.shape
    dy, dx, flip = draws if draws is not None else draw_pad_crop_flip(b, aug, g)
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
                 seed: int = 0, augmentation: Augmentation | None = None, shard: tuple[int, int] = (0, 1)):
        if augmentation is not None and not augmentation.on_device:
            raise ValueError(f"the device path cannot apply {augmentation}; use the loader path")
        self.array, self.batch_size, self.shuffle, self.seed, self.epoch, self.start = array, batch_size, shuffle, seed, 0, 0
        self.rank, self.world = shard
        self.aug = augmentation if augmentation is not None and (augmentation.crop != "none" or augmentation.hflip) else None
        self.images, self.labels = array.images.to(device), array.labels.to(device)

    def __len__(self) -> int:
        return global_batches(len(self.labels), self.batch_size, self.world, self.shuffle)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration yields ``epoch``'s batches from batch ``start`` on."""
        self.epoch, self.start = epoch, start

    def __iter__(self):
        n = len(self.labels)
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for k in range(len(self)):
            i = k * self.batch_size
            m = min(self.batch_size, n - i)
            draws = draw_pad_crop_flip(m, self.aug, g) if self.aug is not None else None
            if k < self.start:  # resumed mid-epoch: this batch's draws are consumed, nothing more
                continue
            lo, hi = shard_bounds(m, self.rank, self.world)
            if hi == lo:  # evaluation of a last batch smaller than the number of processes
                continue
            idx = order[i + lo:i + hi]
            x = self.images[idx]
            if draws is not None:
                x = pad_crop_flip(x, self.aug, g, tuple(d[lo:hi] if d is not None else None for d in draws))
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
    """The image order of an epoch, from (seed, epoch), from global batch ``skip`` on; in a
    distributed run, each global batch's part that this process takes (``shard_bounds``)."""

    def __init__(self, n: int, shuffle: bool, seed: int, batch_size: int, shard: tuple[int, int] = (0, 1)):
        self.n, self.shuffle, self.seed, self.epoch, self.skip = n, shuffle, seed, 0, 0
        self.batch_size, (self.rank, self.world) = batch_size, shard

    def _parts(self) -> list[tuple[int, int]]:
        """(start, stop) in the epoch's order of this process's part of each global batch from ``skip`` on."""
        out = []
        for k in range(self.skip, global_batches(self.n, self.batch_size, self.world, self.shuffle)):
            i = k * self.batch_size
            lo, hi = shard_bounds(min(self.batch_size, self.n - i), self.rank, self.world)
            out.append((i + lo, i + hi))
        return out

    def __len__(self) -> int:  # without drawing the epoch's permutation
        return sum(hi - lo for lo, hi in self._parts())

    def __iter__(self):
        order = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)).tolist() if self.shuffle \
            else list(range(self.n))
        return iter([i for lo, hi in self._parts() for i in order[lo:hi]])


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
                 workers: int | None = None, shard: tuple[int, int] = (0, 1)):
        self.batch_size, self.n, self.world = batch_size, len(dataset), shard[1]
        self.dataset = _SeededPerImage(dataset, seed) if shuffle else dataset
        self.order = _EpochOrder(len(dataset), shuffle, seed, batch_size, shard)
        workers = loader_workers() if workers is None else workers
        # training batches split evenly (the recipe checks it); evaluation only sums, so any split does
        per_process = max(1, math.ceil(batch_size / self.world))
        # the generator only seeds the workers' base seed, so the global torch RNG is never drawn from
        self.loader = DataLoader(self.dataset, batch_size=per_process, sampler=self.order, num_workers=workers,
                                 generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
                                 prefetch_factor=4 if workers else None)

    def __len__(self) -> int:
        return global_batches(self.n, self.batch_size, self.world, self.order.shuffle)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration yields ``epoch``'s batches from batch ``start`` on."""
        self.order.epoch, self.order.skip = epoch, start
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
                 augmentation: Augmentation | None = None, path: str = "auto", workers: int | None = None,
                 shard: tuple[int, int] = (0, 1)):
    """Batches of one split; ``augmentation`` only for training. ``path`` forces a path (tests, bench).
    ``shard = (rank, world)``: a distributed run's process takes its part of every global batch of
    ``batch_size``, so the processes together see the batches of a single-process run."""
    device = torch.device(device)
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if path == "auto":
        path = choose_path(dataset, augmentation)
    if path == "device":
        if not isinstance(dataset, ImageArray):
            raise ValueError("the device path needs an in-memory dataset (ImageArray)")
        return DeviceBatches(dataset, batch_size, device, shuffle=shuffle, seed=seed, augmentation=augmentation,
                             shard=shard)
    if isinstance(dataset, ImageArray):
        dataset = _Transformed(dataset, array_train_transform(dataset, augmentation or Augmentation()))
    elif isinstance(dataset, ImageFiles) and augmentation is not None:
        dataset = dataset.with_transform(folder_train_transform(dataset.opts.info(), dataset.opts.crop_pct, augmentation))
    return LoaderBatches(dataset, batch_size, device, shuffle=shuffle, seed=seed, workers=workers, shard=shard)


def make_mixer(mixup: float, cutmix: float, prob: float, switch_prob: float, label_smoothing: float,
               num_classes: int):
    """timm's Mixup/CutMix on whole batches (soft targets that sum to 1, label smoothing folded
    in), or None when the recipe mixes nothing."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode="batch",
                 label_smoothing=label_smoothing, num_classes=num_classes)
