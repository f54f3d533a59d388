"""Tiny datasets written in the real on-disk formats, read back through the code users run.

Images carry their label in their pixels (a class-dependent brightness plus noise), so a
test can check that a label still belongs to its image after any reshuffling.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def class_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images whose mean brightness is ``20 + 20 * label`` (so labels up to 10 stay distinct)."""
    rng = np.random.RandomState(seed)
    base = (20 + 20 * labels.astype(np.int64)).reshape(-1, *([1] * len(shape)))
    return np.clip(base + rng.randint(-8, 9, size=(len(labels), *shape)), 0, 255).astype(np.uint8)


def balanced_labels(per_class: int, classes: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).permutation(np.repeat(np.arange(classes), per_class))


# ---------------------------------------------------------------- CIFAR python pickles


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)  # the release's pickles are protocol 2


def write_cifar10(root: Path, *, per_class_per_batch: int = 4, test_per_class: int = 3) -> Path:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}; 10 classes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        labels = balanced_labels(per_class_per_batch, 10, seed=i)
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": labels.tolist(),
                                              "data": class_images(labels, (3 * 32 * 32,), seed=i),
                                              "filenames": [f"img_{i}_{j}.png" for j in range(len(labels))]})
    labels = balanced_labels(test_per_class, 10, seed=99)
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels.tolist(),
                                    "data": class_images(labels, (3 * 32 * 32,), seed=99),
                                    "filenames": [f"test_{j}.png" for j in range(len(labels))]})
    _pickle(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": 40,
                                      "num_vis": 3072})
    return root


def write_cifar100(root: Path, *, per_class: int = 4, test_per_class: int = 1) -> Path:
    """root/cifar-100-python/{train, test, meta}; 100 fine classes, coarse = fine // 5."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", per_class, 1), ("test", test_per_class, 2)):
        fine = balanced_labels(n, 100, seed=seed)
        _pickle(folder / name, {"filenames": [f"{name}_{j}.png" for j in range(len(fine))], "batch_label": name,
                                "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                                "data": class_images(fine % 10, (3 * 32 * 32,), seed=seed)})
    _pickle(folder / "meta", {"fine_label_names": [f"f{c}" for c in range(100)],
                              "coarse_label_names": [f"c{c}" for c in range(20)]})
    return root


# ---------------------------------------------------------------- MNIST IDX


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist(root: Path, *, per_class: int = 6, test_per_class: int = 2, gz: bool = False,
                torchvision_layout: bool = False, folder: str = "MNIST") -> Path:
    """The four IDX files in root (or root/<folder>/raw, as torchvision's download leaves them)."""
    base = root / folder / "raw" if torchvision_layout else root
    base.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", per_class, 1), ("t10k", test_per_class, 2)):
        labels = balanced_labels(n, 10, seed)
        write_idx(base / f"{prefix}-images-idx3-ubyte", class_images(labels, (28, 28), seed), gz=gz)
        write_idx(base / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return root


# ---------------------------------------------------------------- image folders


def write_image_folder(root: Path, *, classes: int = 3, train_per_class: int = 6, val_per_class: int = 2,
                       test_per_class: int = 0, size: tuple[int, int] = (40, 30)) -> Path:
    """root/{train,val[,test]}/class<k>/*.png|*.jpg: PNG and JPEG mixed, RGB and grey mixed."""
    from PIL import Image

    splits = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    for s, (split, n) in enumerate(splits.items()):
        if n == 0:
            continue
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = class_images(np.full(n, c), (size[1], size[0], 3), seed=100 * s + c)
            for j in range(n):
                image = Image.fromarray(pixels[j])
                if j % 3 == 2:
                    image.convert("L").save(folder / f"img{j}.png")
                elif j % 2:
                    image.save(folder / f"img{j}.jpg", quality=95)
                else:
                    image.save(folder / f"img{j}.png")
    return root
