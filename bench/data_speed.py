"""Training-batch throughput of the device-resident path against a standard DataLoader.

The data is CIFAR-shaped (N x 3 x 32 x 32 uint8, random pixels) and every path applies the
CIFAR recipe: pad-4 random crop, horizontal flip, normalization, batch 512, shuffled, each
batch delivered on the device as float32.

* reference: the textbook pipeline, a dataset that hands PIL images (as torchvision's CIFAR10
  does) to ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, in a
  ``DataLoader`` with worker processes (and pinned memory on CUDA);
* ours, loader: ``datasets.batches`` on the same data, forced onto its DataLoader path;
* ours, device: ``datasets.batches`` on its device path (the one a CIFAR run takes).

Each figure is images per second over whole epochs after one warm-up epoch, printed with its
ratio to the reference measured in the same run.

    python bench/data_speed.py [--device cpu|cuda] [--images 50000] [--workers N] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datasets import Augmentation
from datasets.arrays import ImageArray
from datasets.batches import make_batches
from datasets.cifar import CIFAR10Options

MEAN, STD = CIFAR10Options.NATIVE[3], CIFAR10Options.NATIVE[4]
BATCH = 512


class PILImages(Dataset):
    """What torchvision's CIFAR10 does per item: HWC uint8 -> PIL image -> transform."""

    def __init__(self, hwc: np.ndarray, labels: np.ndarray, transform):
        self.hwc, self.labels, self.transform = hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.hwc[i])), int(self.labels[i])


def reference(images: np.ndarray, labels: np.ndarray, device: torch.device, workers: int):
    from torchvision import transforms as T

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    return DataLoader(PILImages(images.transpose(0, 2, 3, 1).copy(), labels, transform), batch_size=BATCH,
                      shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def images_per_second(batches, device: torch.device, epochs: int) -> float:
    """Whole epochs, every batch moved to the device as the training loop does, after one warm-up epoch."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n, start = 0, None
    for epoch in range(epochs + 1):
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        if epoch == 1:
            sync()
            start = time.perf_counter()
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if epoch:
                n += len(y)
    sync()
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=min(8, len(os.sched_getaffinity(0))))
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per path, after one warm-up epoch")
    args = p.parse_args()
    device = torch.device(args.device)
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(args.images, 3, 32, 32), dtype=np.uint8)
    labels = rng.randint(0, 10, size=args.images).astype(np.int64)
    array = ImageArray(torch.from_numpy(images), torch.from_numpy(labels), max_value=255, img_size=32, mean=MEAN, std=STD)
    aug = Augmentation(crop="pad", crop_padding=4, hflip=0.5)

    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"CIFAR-shaped training batches ({args.images} images, batch {BATCH}, pad-crop + flip + normalize), "
          f"{args.epochs} timed epochs; torch {torch.__version__}, {hw}, {args.workers} DataLoader workers")
    paths = [
        ("reference: PIL + torchvision transforms + DataLoader", reference(images, labels, device, args.workers)),
        ("ours, loader path", make_batches(array, BATCH, device, shuffle=True, augmentation=aug, path="loader",
                                           workers=args.workers)),
        ("ours, device path", make_batches(array, BATCH, device, shuffle=True, augmentation=aug, path="device")),
    ]
    print(f"{'path':<54}{'images/s':>12}{'vs reference':>14}")
    ref = None
    for name, batches in paths:
        rate = images_per_second(batches, device, args.epochs)
        ref = ref or rate
        print(f"{name:<54}{rate:>12,.0f}{rate / ref:>13.2f}x")


if __name__ == "__main__":
    main()
