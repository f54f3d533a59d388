"""Datasets: digits' fixed split, and every file-based source (CIFAR, MNIST, image folders) read back
through ``build_dataset`` from tiny files in its real on-disk format."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import datasets.cifar.reader
import datasets.folder.reader
import datasets.mnist.reader
from data_fixtures import write_cifar10, write_cifar100, write_idx, write_image_folder, write_mnist
from datasets import SPLITS, DataError, DatasetInfo, build_dataset, data_problem
from datasets.arrays import ImageArray
from datasets.cifar import CIFAR10Options
from datasets.folder import ImageFolderOptions
from datasets.folder.reader import ImageFiles
from datasets.mnist import MNISTOptions


def test_digits_split_is_fixed_disjoint_and_complete():
    parts = {s: build_dataset("digits", split=s) for s in ("train", "val", "test")}
    sizes = {s: len(ds) for s, (ds, _) in parts.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] > sizes["val"] > 0
    info = parts["train"][1]
    assert (info.num_classes, info.in_chans, info.img_size) == (10, 1, 8)
    rows = {s: {tuple(x.flatten().tolist()) for x in ds.tensors[0]} for s, (ds, _) in parts.items()}
    # no test image also in train (digits has a handful of exact duplicates, hence the tolerance)
    assert len(rows["test"] & rows["train"]) <= 3
    again = build_dataset("digits", split="test")[0]
    assert torch.equal(again.tensors[0], parts["test"][0].tensors[0])


def test_digits_split_is_stratified_and_normalized():
    ds, _ = build_dataset("digits", split="train")
    counts = torch.bincount(ds.tensors[1], minlength=10)
    assert counts.min() >= 0.9 * counts.max()
    assert abs(ds.tensors[0].mean().item()) < 0.05 and abs(ds.tensors[0].std().item() - 1) < 0.05


def test_subset_keeps_the_first_n_per_class():
    ds, _ = build_dataset("digits", split="train", subset=5)
    assert torch.bincount(ds.tensors[1]).tolist() == [5] * 10


def test_classes_keeps_the_listed_labels_and_relabels_them_in_order():
    full, _ = build_dataset("digits", split="test")
    ds, info = build_dataset("digits", split="test", classes=[7, 5])
    assert info.num_classes == 2
    y = full.labels
    assert torch.equal(ds.images, full.images[(y == 5) | (y == 7)])
    assert torch.equal(ds.labels, (full.labels[(y == 5) | (y == 7)] == 5).long())  # 7 -> 0, 5 -> 1
    with pytest.raises(ValueError, match="classes: 10 is no label of this source; labels run from 0 to 9"):
        build_dataset("digits", split="test", classes=[3, 10])


# ================================================================ file-based sources, read from tiny files in their real format
#
# The fixtures (tests/data_fixtures.py) write each source's real on-disk format; every image's mean
# brightness is 20 + 20 * label (+- 8 of noise), so a label can be checked against its image.

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))


def brightness_label(pixels: torch.Tensor) -> torch.Tensor:
    """The label a fixture image encodes: its mean brightness (0..255 scale) is 20 + 20 * label."""
    return torch.round((pixels.float().flatten(1).mean(1) - 20) / 20).long()


def unnormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalized float images back to the 0..255 scale."""
    return (x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)) * 255


def clear_reader_caches() -> None:
    """The readers cache what they read (per process); clear so a second build reads the files again."""
    datasets.cifar.reader._load.cache_clear()
    datasets.mnist.reader._load.cache_clear()
    datasets.folder.reader.list_folder.cache_clear()


@dataclass(frozen=True)
class Case:
    source: str
    write: Callable[[Path], object]
    options: dict
    classes: int
    per_class: int  # images per class in the source's training part
    val_per_class: int  # carved for validation: round(per_class * val_fraction 0.1)
    test_size: int
    shape: tuple[int, int, int]
    stats: tuple[tuple[float, ...], tuple[float, ...]]
    matches: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (labels, brightness labels) -> agree?


def _cifar100(root: Path):  # 10 per class so that 10% of a class is one image (the default 4 would carve none)
    return write_cifar100(root, per_class=10, test_per_class=1)


CASES = {
    "cifar10": Case("cifar10", write_cifar10, {}, 10, 20, 2, 30, (3, 32, 32), CIFAR10_STATS,
                    lambda y, b: y == b),
    # the fixture's brightness encodes fine % 10
    "cifar100-fine": Case("cifar100", _cifar100, {}, 100, 10, 1, 100, (3, 32, 32), CIFAR100_STATS,
                          lambda y, b: y % 10 == b),
    # coarse = fine // 5 and brightness = fine % 10, so coarse % 2 == brightness // 5
    "cifar100-coarse": Case("cifar100", _cifar100, {"labels": "coarse"}, 20, 50, 5, 100, (3, 32, 32), CIFAR100_STATS,
                            lambda y, b: y % 2 == b // 5),
    "mnist-raw": Case("mnist", write_mnist, {}, 10, 6, 1, 20, (1, 28, 28), MNIST_STATS, lambda y, b: y == b),
    "mnist-gz": Case("mnist", lambda r: write_mnist(r, gz=True), {}, 10, 6, 1, 20, (1, 28, 28), MNIST_STATS,
                     lambda y, b: y == b),
    "mnist-torchvision-layout": Case("mnist", lambda r: write_mnist(r, torchvision_layout=True), {}, 10, 6, 1, 20,
                                     (1, 28, 28), MNIST_STATS, lambda y, b: y == b),
    "fashion_mnist": Case("fashion_mnist", write_mnist, {}, 10, 6, 1, 20, (1, 28, 28), FASHION_STATS,
                          lambda y, b: y == b),
    "fashion_mnist-torchvision-layout": Case(
        "fashion_mnist", lambda r: write_mnist(r, gz=True, torchvision_layout=True, folder="FashionMNIST"), {},
        10, 6, 1, 20, (1, 28, 28), FASHION_STATS, lambda y, b: y == b),
}


def build_splits(case: Case, root: Path, **extra) -> dict[str, tuple]:
    return {s: build_dataset(case.source, root=str(root), split=s, **case.options, **extra) for s in SPLITS}


def image_rows(ds: ImageArray) -> set[bytes]:
    return {bytes(img.numpy().tobytes()) for img in ds.images}


@pytest.mark.parametrize("name", list(CASES))
def test_file_source_reads_classes_shapes_and_normalization(name, tmp_path):
    case = CASES[name]
    case.write(tmp_path)
    mean, std = case.stats
    for split, (ds, info) in build_splits(case, tmp_path).items():
        assert isinstance(ds, ImageArray)
        assert info == DatasetInfo(num_classes=case.classes, in_chans=case.shape[0], img_size=case.shape[1],
                                   mean=mean, std=std)
        assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape[1:]) == case.shape
        assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < case.classes
        # every label still belongs to its image
        assert case.matches(ds.labels, brightness_label(ds.images)).all(), split
        # normalized with the dataset's published mean/std: (pixels / 255 - mean) / std
        x, y = ds.tensors
        expected = (ds.images.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        assert x.dtype == torch.float32 and tuple(x.shape) == (len(ds), *case.shape)
        assert torch.isfinite(x).all()
        assert torch.allclose(x, expected, atol=1e-5)
        for i in (0, len(ds) - 1):
            xi, yi = ds[i]
            assert xi.dtype == torch.float32 and torch.allclose(xi, expected[i], atol=1e-5)
            assert isinstance(yi, int) and yi == int(y[i])


@pytest.mark.parametrize("name", list(CASES))
def test_file_source_split_sizes_are_stratified_disjoint_and_complete(name, tmp_path):
    case = CASES[name]
    case.write(tmp_path)
    parts = {s: ds for s, (ds, _) in build_splits(case, tmp_path).items()}
    train, val, test = parts["train"], parts["val"], parts["test"]
    n = case.classes
    assert len(train) + len(val) == n * case.per_class  # train + val is the source's whole training part
    assert torch.bincount(val.labels, minlength=n).tolist() == [case.val_per_class] * n
    assert torch.bincount(train.labels, minlength=n).tolist() == [case.per_class - case.val_per_class] * n
    assert len(test) == case.test_size
    rows = {s: image_rows(ds) for s, ds in parts.items()}
    assert len(rows["train"]) == len(train) and len(rows["val"]) == len(val)  # fixture images are all distinct
    assert not rows["train"] & rows["val"]
    assert not rows["test"] & (rows["train"] | rows["val"])


@pytest.mark.parametrize("name", list(CASES))
def test_file_source_split_is_deterministic_and_seed_independent(name, tmp_path):
    case = CASES[name]
    case.write(tmp_path)
    torch.manual_seed(1), np.random.seed(1)
    first = build_splits(case, tmp_path)
    clear_reader_caches()  # read the files again
    torch.manual_seed(2), np.random.seed(2)  # another run's seed must not move the split
    second = build_splits(case, tmp_path)
    for s in SPLITS:
        a, b = first[s][0], second[s][0]
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), s
        assert torch.equal(a.tensors[0], b.tensors[0])


def test_subset_keeps_the_first_n_training_images_per_class(tmp_path):
    case = CASES["cifar10"]
    case.write(tmp_path)
    full = build_splits(case, tmp_path)
    small = build_splits(case, tmp_path, subset=3)
    train, sub = full["train"][0], small["train"][0]
    assert torch.bincount(sub.labels, minlength=10).tolist() == [3] * 10
    for c in range(10):
        assert torch.equal(sub.images[sub.labels == c], train.images[train.labels == c][:3])
    for s in ("val", "test"):  # subset only thins the training split
        assert torch.equal(small[s][0].images, full[s][0].images)


def test_subset_on_mnist(tmp_path):
    write_mnist(tmp_path)
    ds, _ = build_dataset("mnist", root=str(tmp_path), split="train", subset=2)
    assert torch.bincount(ds.labels, minlength=10).tolist() == [2] * 10


@pytest.mark.parametrize("source,writer,side,chans", [("cifar10", write_cifar10, 64, 3), ("mnist", write_mnist, 32, 1)])
def test_img_size_resizes_and_info_follows(source, writer, side, chans, tmp_path):
    writer(tmp_path)
    ds, info = build_dataset(source, root=str(tmp_path), split="train", img_size=side)
    assert info.img_size == side
    assert ds.images.shape[-1] != side  # stored at native size, resized when read
    x, y = ds[0]
    assert tuple(x.shape) == (chans, side, side)
    xs = ds.tensors[0]
    assert tuple(xs.shape[1:]) == (chans, side, side) and torch.isfinite(xs).all()
    # resizing keeps each image's brightness, hence its label
    assert torch.equal(brightness_label(unnormalize(xs, info.mean, info.std)), ds.labels)


def test_custom_mean_and_std_are_used(tmp_path):
    write_cifar10(tmp_path)
    mean, std = [0.5, 0.25, 0.0], [0.25, 0.5, 1.0]
    ds, info = build_dataset("cifar10", root=str(tmp_path), split="val", mean=mean, std=std)
    assert info.mean == tuple(mean) and info.std == tuple(std)
    expected = (ds.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(ds.tensors[0], expected, atol=1e-5)
    assert torch.allclose(ds[1][0], expected[1], atol=1e-5)


@pytest.mark.parametrize("options_class,kwargs,message", [
    (CIFAR10Options, {"mean": [0.5, 0.5]}, "mean: give 3 value"),
    (CIFAR10Options, {"std": [0.2, 0.2, 0.2, 0.2]}, "std: give 3 value"),
    (MNISTOptions, {"mean": [0.1, 0.1, 0.1]}, "mean: give 1 value"),
    (ImageFolderOptions, {"std": [0.2]}, "std: give 3 value"),
    (CIFAR10Options, {"std": [0.2, 0.0, 0.2]}, "std: values must be positive"),
])
def test_options_refuse_wrong_mean_and_std(options_class, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        options_class(root="data", **kwargs)


def test_build_dataset_refuses_bad_options_before_reading(tmp_path):
    with pytest.raises(ValidationError, match="mean: give 3 value"):
        build_dataset("cifar10", root=str(tmp_path / "nowhere"), split="train", mean=[0.5])
    with pytest.raises(ValidationError):  # unknown keys are refused, not ignored
        build_dataset("cifar10", root=str(tmp_path / "nowhere"), split="train", img_sise=64)


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize("source,layout", [
    ("mnist", "train-images-idx3-ubyte"), ("fashion_mnist", "FashionMNIST/raw"),
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
])
def test_missing_downloadable_data_is_one_line_naming_path_layout_and_download(source, layout, tmp_path):
    root = tmp_path / "nowhere"
    problem = data_problem(source, root=str(root))
    assert problem is not None and "\n" not in problem
    assert str(root) in problem and layout in problem
    assert problem.endswith(f"`runner data download {source}`")
    with pytest.raises(DataError) as caught:
        build_dataset(source, root=str(root), split="train")
    assert str(caught.value) == problem


def test_missing_image_folder_names_the_layout_and_no_download(tmp_path):
    root = tmp_path / "imagenet"
    problem = data_problem("imagefolder", root=str(root))
    assert problem is not None and "\n" not in problem
    assert str(root) in problem and "train/" in problem and "one folder per class" in problem
    assert "runner data download" not in problem  # nothing can fetch an arbitrary folder tree
    with pytest.raises(DataError) as caught:
        build_dataset("imagefolder", root=str(root), split="test")
    assert str(caught.value) == problem
    (root / "train" / "a").mkdir(parents=True)  # train/ alone: val/ is named as missing
    assert "no val/ folder" in data_problem("imagefolder", root=str(root))


def test_partly_missing_files_are_named(tmp_path):
    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "cifar-10-batches-py" / "test_batch").unlink()
    problem = data_problem("cifar10", root=str(tmp_path / "c"))
    assert problem is not None and problem.startswith("test_batch not found in")
    write_mnist(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    assert data_problem("mnist", root=str(tmp_path / "m")) is not None
    with pytest.raises(DataError):
        build_dataset("mnist", root=str(tmp_path / "m"), split="train")


def test_present_data_has_no_problem(tmp_path):
    write_cifar10(tmp_path / "c"), write_mnist(tmp_path / "m", gz=True), write_image_folder(tmp_path / "f")
    assert data_problem("cifar10", root=str(tmp_path / "c")) is None
    assert data_problem("mnist", root=str(tmp_path / "m")) is None
    assert data_problem("imagefolder", root=str(tmp_path / "f")) is None


# ---------------------------------------------------------------- malformed data


def test_idx_with_bad_header_is_a_data_error_naming_the_file(tmp_path):
    write_mnist(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte"
    write_idx(bad, np.zeros((60, 2), dtype=np.uint8))  # labels with 2 dimensions instead of 1
    with pytest.raises(DataError, match="bad header") as caught:
        build_dataset("mnist", root=str(tmp_path), split="train")
    assert str(bad) in str(caught.value)
    bad.write_bytes(b"\x00\x00\x0d\x01" + (60).to_bytes(4, "big") + bytes(240))  # float32 type code
    with pytest.raises(DataError, match="not an IDX file of uint8") as caught:
        build_dataset("mnist", root=str(tmp_path), split="train")
    assert str(bad) in str(caught.value)


def test_truncated_idx_is_a_data_error_naming_the_file(tmp_path):
    write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as caught:
        build_dataset("mnist", root=str(tmp_path), split="train")
    assert str(images) in str(caught.value)


# A cut-off .gz (an interrupted download) is the common failure: it must name the file, not raise gzip's EOFError.
def test_truncated_gzipped_idx_is_a_data_error_naming_the_file(tmp_path):
    write_mnist(tmp_path, gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:len(images.read_bytes()) // 2])
    with pytest.raises(DataError) as caught:
        build_dataset("mnist", root=str(tmp_path), split="train")
    assert str(images) in str(caught.value)


def test_idx_images_and_labels_of_different_lengths_are_a_data_error(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(59, dtype=np.uint8))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: 60 images but 59 labels"):
        build_dataset("mnist", root=str(tmp_path), split="val")


@pytest.mark.parametrize("source,writer,file,key,options", [
    ("cifar10", write_cifar10, "cifar-10-batches-py/data_batch_3", "labels", {}),
    ("cifar100", write_cifar100, "cifar-100-python/train", "coarse_labels", {"labels": "coarse"}),
])
def test_cifar_pickle_without_its_label_key_is_a_data_error_naming_the_file(source, writer, file, key, options,
                                                                           tmp_path):
    writer(tmp_path)
    path = tmp_path / file
    with open(path, "rb") as f:
        entry = pickle.load(f)
    del entry[key]
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    with pytest.raises(DataError, match=f"expected keys 'data' and '{key}'") as caught:
        build_dataset(source, root=str(tmp_path), split="train", **options)
    assert str(path) in str(caught.value)


def test_cifar_file_that_is_not_a_pickle_is_a_data_error_naming_the_file(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(b"<html><body>403 Forbidden</body></html>")  # what a failed download saves
    with pytest.raises(DataError, match="not a CIFAR python pickle") as caught:
        build_dataset("cifar10", root=str(tmp_path), split="test")
    assert str(path) in str(caught.value)


def test_cifar_pickle_that_is_not_a_dict_is_a_data_error_naming_the_file(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "wb") as f:
        pickle.dump([1, 2, 3], f, protocol=2)
    with pytest.raises(DataError) as caught:
        build_dataset("cifar10", root=str(tmp_path), split="train")
    assert str(path) in str(caught.value)


def test_cifar_data_of_the_wrong_shape_is_a_data_error(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        entry = pickle.load(f)
    entry["data"] = entry["data"][:, :1024]  # one channel only
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    with pytest.raises(DataError, match="expected N x 3072 images") as caught:
        build_dataset("cifar10", root=str(tmp_path), split="train")
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("test_folder", [False, True])
def test_image_folder_whose_val_classes_differ_from_train_is_a_data_error(test_folder, tmp_path):
    write_image_folder(tmp_path, classes=3, test_per_class=2 if test_folder else 0)
    (tmp_path / "val" / "class2").rename(tmp_path / "val" / "classX")
    split = "val" if test_folder else "test"  # the split val/ serves
    with pytest.raises(DataError, match="class folders differ from train/") as caught:
        build_dataset("imagefolder", root=str(tmp_path), split=split, img_size=32)
    message = str(caught.value)
    assert str(tmp_path / "val") in message and "classX" in message and "class2" in message


# ---------------------------------------------------------------- image folders


def folder_samples(ds: ImageFiles) -> list[tuple[str, int]]:
    return [(str(p), label) for p, label in ds.samples]


def check_folder_items(ds: ImageFiles, info: DatasetInfo, side: int) -> torch.Tensor:
    """Every item is a 3-channel float32 image of ``side`` normalized with ``info``, its label intact."""
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    assert xs.dtype == torch.float32 and tuple(xs.shape) == (len(ds), 3, side, side)
    assert torch.isfinite(xs).all()
    assert torch.equal(labels, torch.from_numpy(ds.labels))
    assert torch.equal(brightness_label(unnormalize(xs, info.mean, info.std)), labels)
    return xs


def test_image_folder_decodes_png_jpeg_and_grey_to_rgb_of_img_size(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path, classes=3, train_per_class=6)
    ds, info = build_dataset("imagefolder", root=str(tmp_path), split="train", img_size=24, val_per_class=1)
    assert info.img_size == 24 and info.in_chans == 3
    assert (info.mean, info.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's, by default
    kinds = {}
    for i, (path, _) in enumerate(ds.samples):
        with Image.open(path) as im:
            kinds.setdefault((im.format, im.mode), []).append(i)
    assert set(kinds) == {("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "L")}  # the fixture mixes all three
    xs = check_folder_items(ds, info, 24)
    for i in kinds[("PNG", "L")]:  # grey: the three channels carry the same pixels
        rgb = unnormalize(xs[i:i + 1], info.mean, info.std)[0]
        assert torch.allclose(rgb[0], rgb[1], atol=1e-3) and torch.allclose(rgb[0], rgb[2], atol=1e-3)


def test_image_folder_without_test_carves_validation_from_train(tmp_path):
    write_image_folder(tmp_path, classes=3, train_per_class=6, val_per_class=2)
    parts = {s: build_dataset("imagefolder", root=str(tmp_path), split=s, img_size=32, val_per_class=2)
             for s in SPLITS}
    train, val, test = (parts[s][0] for s in SPLITS)
    assert all(info.num_classes == 3 and info.img_size == 32 for _, info in parts.values())
    assert np.bincount(train.labels).tolist() == [4] * 3  # 6 per class in train/, 2 of them carved
    assert np.bincount(val.labels).tolist() == [2] * 3
    train_files = {p for p, _ in folder_samples(train)}
    val_files = {p for p, _ in folder_samples(val)}
    assert not train_files & val_files
    assert train_files | val_files == {str(p) for p in (tmp_path / "train").rglob("img*")}
    # val/ is the test split
    assert {p for p, _ in folder_samples(test)} == {str(p) for p in (tmp_path / "val").rglob("img*")}
    assert np.bincount(test.labels).tolist() == [2] * 3
    for ds, info in parts.values():
        check_folder_items(ds, info, 32)
    # deterministic: listed and carved again, the same files
    clear_reader_caches()
    np.random.seed(5)
    again = build_dataset("imagefolder", root=str(tmp_path), split="val", img_size=32, val_per_class=2)[0]
    assert folder_samples(again) == folder_samples(val)


def test_image_folder_class_smaller_than_val_per_class_keeps_half(tmp_path):
    write_image_folder(tmp_path, classes=2, train_per_class=6)
    train = build_dataset("imagefolder", root=str(tmp_path), split="train", img_size=16)[0]  # val_per_class 50
    val = build_dataset("imagefolder", root=str(tmp_path), split="val", img_size=16)[0]
    assert np.bincount(train.labels).tolist() == [3, 3] and np.bincount(val.labels).tolist() == [3, 3]


def test_image_folder_with_test_maps_the_three_folders_to_the_three_splits(tmp_path):
    write_image_folder(tmp_path, classes=3, train_per_class=4, val_per_class=2, test_per_class=3)
    for split, folder, per_class in (("train", "train", 4), ("val", "val", 2), ("test", "test", 3)):
        ds, info = build_dataset("imagefolder", root=str(tmp_path), split=split, img_size=32)
        assert {p for p, _ in folder_samples(ds)} == {str(p) for p in (tmp_path / folder).rglob("img*")}, split
        assert np.bincount(ds.labels).tolist() == [per_class] * 3
        assert ds.classes == ["class0", "class1", "class2"]
        check_folder_items(ds, info, 32)


def test_image_folder_subset_and_custom_normalization(tmp_path):
    write_image_folder(tmp_path, classes=3, train_per_class=6)
    full, info = build_dataset("imagefolder", root=str(tmp_path), split="train", img_size=16, val_per_class=1)
    sub = build_dataset("imagefolder", root=str(tmp_path), split="train", img_size=16, val_per_class=1, subset=2)[0]
    assert np.bincount(sub.labels).tolist() == [2] * 3
    for c in range(3):
        assert [p for p, y in full.samples if y == c][:2] == [p for p, y in sub.samples if y == c]
    mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    raw, raw_info = build_dataset("imagefolder", root=str(tmp_path), split="train", img_size=16, val_per_class=1,
                                  mean=mean, std=std)
    assert raw_info.mean == tuple(mean) and raw_info.std == tuple(std)
    for i in (0, 4):
        assert torch.allclose(raw[i][0] * 255, unnormalize(full[i][0][None], info.mean, info.std)[0], atol=1e-3)


def test_image_folder_num_classes_is_checked(tmp_path):
    write_image_folder(tmp_path, classes=3)
    with pytest.raises(DataError, match="3 class folders, but num_classes = 5") as caught:
        build_dataset("imagefolder", root=str(tmp_path), split="train", img_size=16, num_classes=5)
    assert str(tmp_path / "train") in str(caught.value)
    ds, info = build_dataset("imagefolder", root=str(tmp_path), split="train", img_size=16, num_classes=3)
    assert info.num_classes == 3 and len(ds) > 0


def test_batches_have_standard_strides_so_convolutions_take_the_usual_kernels():
    """A grey batch normalized by broadcasting can come out with channels-last strides that
    ``is_contiguous()`` does not flag; CPU convolutions then run another kernel with other
    numerics, which changed digits results in the last digits of the loss."""
    from datasets.batches import make_batches

    ds, _ = build_dataset("digits", split="train")
    x, _ = next(iter(make_batches(ds, 32, "cpu", shuffle=True, path="device")))
    assert x.stride() == (64, 64, 8, 1)
    assert ds[0][0].stride() == (64, 8, 1)
