"""Augmentation and batching: the device path (pad-crop-flip on uint8 batches) and the DataLoader path
(per-image transforms, timm's policies) draw from one distribution, keep labels with their images and
replay an epoch from (seed, epoch); Mixup/CutMix give proper soft targets."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2

from data_fixtures import write_cifar10, write_image_folder
from datasets import Augmentation, build_dataset, check_auto_augment
from datasets.arrays import ImageArray
from datasets.batches import DeviceBatches, LoaderBatches, choose_path, make_batches, make_mixer, pad_crop_flip
from datasets.options import IMAGENET_MEAN
from datasets.transforms import timm_policy

AUTO_AUGMENT_EXAMPLES = ["rand-m9-mstd0.5-inc1", "original", "augmix-m5-w4-d2", "3a", "v0r", "original-mstd0.5",
                         "cifar10", "svhn", "imagenet"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """CIFAR-10's train split from the fixture: 180 images, 18 per class, labels in their brightness."""
    root = write_cifar10(tmp_path_factory.mktemp("cifar"))
    return build_dataset("cifar10", root=str(root), split="train")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder's train split (PNG, JPEG, grey; 3 classes of 4 images) at 32x32."""
    root = write_image_folder(tmp_path_factory.mktemp("folder"), classes=3, train_per_class=6, val_per_class=2)
    return build_dataset("imagefolder", root=str(root), split="train", img_size=32, val_per_class=2)


def seed_all(seed: int) -> None:
    """The global RNGs per-image transforms use in the main process (torch's, timm's python ``random``)."""
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)


def unnormalize(x: torch.Tensor, info) -> torch.Tensor:
    """Normalized float images back to the 0..255 scale."""
    return (x * torch.tensor(info.std).view(1, -1, 1, 1) + torch.tensor(info.mean).view(1, -1, 1, 1)) * 255


def brightness_label(pixels: torch.Tensor) -> torch.Tensor:
    """The label a fixture image encodes: its mean brightness (0..255 scale) is 20 + 20 * label."""
    return torch.round((pixels.float().flatten(1).mean(1) - 20) / 20).long()


def distinct_images(n: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """uint8 images whose pixels are all different and nonzero, so every crop/flip of one (and the
    zero padding) can be told apart."""
    rng = np.random.RandomState(seed)
    return torch.from_numpy(np.stack([rng.choice(np.arange(1, 256), c * h * w, replace=False).reshape(c, h, w)
                                      for _ in range(n)]).astype(np.uint8))


def outcomes(image: torch.Tensor, pad: int) -> dict[bytes, tuple[int, int, bool]]:
    """Every image pad-crop-flip can make of ``image``: its bytes -> (dy, dx, flipped)."""
    c, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    table = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flip in (False, True):
                table[(crop.flip(2) if flip else crop).numpy().tobytes()] = (dy, dx, flip)
    return table


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in batches])
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- pad-crop-flip on the device path


def test_pad_crop_flip_gives_crops_of_the_zero_padded_image():
    x = distinct_images(32, 3, 6, 8, seed=0)  # not square, to keep rows and columns apart
    out = pad_crop_flip(x, Augmentation(crop="pad", crop_padding=3, hflip=0.5), torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    seen = set()
    for i in range(len(x)):
        table = outcomes(x[i], 3)
        assert len(table) == 7 * 7 * 2  # every outcome is recognizable
        key = out[i].numpy().tobytes()
        assert key in table, f"image {i} is not a (flipped) crop of its own zero-padded original"
        seen.add(table[key])
    # and it is random: several offsets, both flips
    assert len({(dy, dx) for dy, dx, _ in seen}) >= 10 and {f for *_, f in seen} == {False, True}


def test_hflip_one_flips_every_image():
    x = distinct_images(16, 3, 8, 8, seed=1)
    out = pad_crop_flip(x, Augmentation(hflip=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(out, x.flip(3))
    out = pad_crop_flip(x, Augmentation(crop="pad", crop_padding=2, hflip=1.0), torch.Generator().manual_seed(0))
    assert all(outcomes(x[i], 2)[out[i].numpy().tobytes()][2] for i in range(len(x)))


def test_no_crop_and_no_flip_leave_images_unchanged():
    x = distinct_images(16, 3, 8, 8, seed=2)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(pad_crop_flip(x, Augmentation(crop="none", hflip=0.0), g), x)
    assert torch.equal(pad_crop_flip(x, Augmentation(crop="pad", crop_padding=0), g), x)
    array = ImageArray(x, torch.arange(16) % 4, max_value=255, img_size=8, mean=(0.5,) * 3, std=(0.25,) * 3)
    xs, ys = collect(make_batches(array, 5, "cpu", shuffle=False, augmentation=Augmentation(), path="device"))
    assert torch.equal(xs, array.tensors[0]) and torch.equal(ys, array.labels)


# ---------------------------------------------------------------- device path vs loader path


def test_device_and_loader_paths_draw_the_same_pad_crop_flip_distribution():
    # N copies of one 8x8 image with distinct pixels: one epoch is N independent draws of (dy, dx, flip),
    # each recognizable from the output. mean 0, std 1: outputs are pixels / 255, read back exactly.
    n, pad = 5000, 4
    image = distinct_images(1, 3, 8, 8, seed=3)[0]
    array = ImageArray(image.expand(n, -1, -1, -1).clone(), torch.zeros(n, dtype=torch.long), max_value=255,
                       img_size=8, mean=(0.0,) * 3, std=(1.0,) * 3)
    aug = Augmentation(crop="pad", crop_padding=pad, hflip=0.5)
    table = outcomes(image, pad)
    cells = sorted(table.values())
    assert len(cells) == 9 * 9 * 2
    counts, means = {}, {}
    for path in ("device", "loader"):
        seed_all(0)
        xs, _ = collect(make_batches(array, 1000, "cpu", shuffle=True, seed=0, augmentation=aug, path=path, workers=0))
        pixels = (xs * 255).round().to(torch.uint8)
        drawn = [table.get(p.numpy().tobytes()) for p in pixels]
        assert None not in drawn, f"{path}: an output that is no crop/flip of the zero-padded image"
        counts[path] = np.array([sum(1 for d in drawn if d == cell) for cell in cells])
        means[path] = pixels.float().mean(0)
        # Uniform over the 162 (dy, dx, flip) outcomes, ~31 expected per cell: Pearson's chi-square with
        # 161 degrees of freedom. A correct sampler falls below p = 1e-4 once in 10,000 seeds (the seeds
        # are fixed, so this is deterministic); an off-by-one offset range (empty edge cells) or a biased
        # flip gives p < 1e-30.
        expected = n / len(cells)
        stat = float(((counts[path] - expected) ** 2 / expected).sum())
        assert chi2.sf(stat, len(cells) - 1) > 1e-4, (path, stat)
    # The two paths agree with each other: marginal frequency of each offset (p = 1/9; the difference of two
    # independent estimates from 5000 draws has SE sqrt(2 p (1-p) / n) = 0.0063, tolerance 0.035 is 5.5 SE)
    # and of the flip (SE 0.010, tolerance 0.05).
    freq = {path: c / n for path, c in counts.items()}
    for axis in (0, 1):
        for offset in range(2 * pad + 1):
            mask = np.array([cell[axis] == offset for cell in cells])
            assert abs(freq["device"][mask].sum() - freq["loader"][mask].sum()) < 0.035, (axis, offset)
    flipped = np.array([cell[2] for cell in cells])
    assert abs(freq["device"][flipped].sum() - freq["loader"][flipped].sum()) < 0.05
    # Per-pixel mean image against the exact expectation over the 162 outcomes: per-pixel SE is at most
    # 127.5 / sqrt(5000) = 1.8 on the 0..255 scale; tolerance 10.
    exact = torch.stack([torch.frombuffer(bytearray(k), dtype=torch.uint8).view(3, 8, 8).float()
                         for k in table]).mean(0)
    for path in ("device", "loader"):
        assert (means[path] - exact).abs().max() < 10, path


def test_both_paths_give_the_same_batches_without_augmentation(tmp_path):
    # the one normalization (and resize to img_size) both paths end with
    root = write_cifar10(tmp_path)
    ds, info = build_dataset("cifar10", root=str(root), split="val", img_size=40)
    device = collect(make_batches(ds, 8, "cpu", shuffle=False, path="device"))
    loader = collect(make_batches(ds, 8, "cpu", shuffle=False, path="loader", workers=0))
    assert tuple(device[0].shape[1:]) == (3, 40, 40)
    assert torch.allclose(device[0], loader[0], atol=1e-5) and torch.equal(device[1], loader[1])


# ---------------------------------------------------------------- labels stay with their images


@pytest.mark.parametrize("path", ["device", "loader"])
def test_labels_stay_with_their_images_through_shuffle_and_augmentation(cifar, path):
    ds, info = cifar
    seed_all(0)
    batches = make_batches(ds, 32, "cpu", shuffle=True, seed=3, augmentation=Augmentation(crop="pad", hflip=0.5),
                           path=path, workers=0)
    assert batches.path == path
    batches.set_epoch(2)
    xs, ys = collect(batches)
    pixels = unnormalize(xs, info)
    # with 4 px of padding, output pixels 4..27 always come from the image itself
    assert torch.equal(brightness_label(pixels[:, :, 4:-4, 4:-4]), ys)
    assert torch.equal(torch.bincount(ys, minlength=10), torch.bincount(ds.labels, minlength=10))  # each image once
    assert not torch.equal(ys, ds.labels)  # shuffled
    # augmented: the fixture's pixels are >= 12, so zeros are padding; offsets (4, 4) alone show none (1 in 81)
    assert (pixels.round() == 0).flatten(1).any(1).float().mean() > 0.8


def test_labels_stay_with_their_images_in_an_image_folder(folder):
    ds, info = folder
    seed_all(0)
    batches = make_batches(ds, 4, "cpu", shuffle=True, seed=1, augmentation=Augmentation(crop="pad", hflip=0.5),
                           workers=0)
    assert batches.path == "loader"
    xs, ys = collect(batches)
    assert tuple(xs.shape) == (len(ds), 3, 32, 32)
    assert torch.equal(brightness_label(unnormalize(xs, info)[:, :, 4:-4, 4:-4]), ys)
    assert sorted(ys.tolist()) == sorted(ds.labels.tolist())


# ---------------------------------------------------------------- an epoch is reproducible


def test_device_epoch_is_reproducible(cifar):
    ds, _ = cifar
    aug = Augmentation(crop="pad", hflip=0.5)
    batches = make_batches(ds, 32, "cpu", shuffle=True, seed=5, augmentation=aug, path="device")
    assert isinstance(batches, DeviceBatches)
    batches.set_epoch(3)
    first = collect(batches)
    seed_all(123)  # whatever ran in between
    batches.set_epoch(4)
    other = collect(batches)
    batches.set_epoch(3)
    again = collect(batches)
    resumed = make_batches(ds, 32, "cpu", shuffle=True, seed=5, augmentation=aug, path="device")  # a resumed run
    resumed.set_epoch(3)
    for replay in (again, collect(resumed)):
        assert torch.equal(replay[0], first[0]) and torch.equal(replay[1], first[1])
    assert not torch.equal(other[1], first[1])  # another epoch, another order
    seed6 = make_batches(ds, 32, "cpu", shuffle=True, seed=6, augmentation=aug, path="device")
    seed6.set_epoch(3)
    assert not torch.equal(collect(seed6)[1], first[1])  # another seed, another order


def _loader_epochs(ds, workers: int, aug: Augmentation | None):
    batches = make_batches(ds, 32, "cpu", shuffle=True, seed=5, augmentation=aug, path="loader", workers=workers)
    assert isinstance(batches, LoaderBatches)
    seed_all(1)
    batches.set_epoch(3)
    first = collect(batches)
    batches.set_epoch(4)
    other = collect(batches)
    seed_all(2)  # a resumed run: a fresh process, whatever global RNG state
    resumed = make_batches(ds, 32, "cpu", shuffle=True, seed=5, augmentation=aug, path="loader", workers=workers)
    resumed.set_epoch(3)
    return first, other, collect(resumed)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_epoch_order_is_reproducible(cifar, workers):
    first, other, replay = _loader_epochs(cifar[0], workers, None)
    assert torch.equal(replay[0], first[0]) and torch.equal(replay[1], first[1])
    assert not torch.equal(other[1], first[1])


def test_loader_epoch_with_augmentation_is_reproducible_with_workers(cifar):
    first, other, replay = _loader_epochs(cifar[0], 2, Augmentation(crop="pad", hflip=0.5))
    assert torch.equal(replay[0], first[0]) and torch.equal(replay[1], first[1])
    assert not torch.equal(other[1], first[1])


# Without workers the per-image transforms run in this process on the global RNGs; the loader gives them
# a private state seeded by (seed, epoch), so a resumed run replays its batches here too.
def test_loader_epoch_with_augmentation_is_reproducible_without_workers(cifar):
    first, other, replay = _loader_epochs(cifar[0], 0, Augmentation(crop="pad", hflip=0.5))
    assert torch.equal(replay[1], first[1])  # the order is replayed ...
    assert torch.equal(replay[0], first[0])  # ... but the crops and flips are not (fails)


# ---------------------------------------------------------------- Mixup / CutMix


def other_classes(classes: int, *mixed: torch.Tensor) -> torch.Tensor:
    """Mask of the classes that were not mixed into a row."""
    mask = torch.ones(classes, dtype=torch.bool)
    mask[torch.stack(mixed)] = False
    return mask


def test_make_mixer_is_none_when_nothing_mixes():
    assert make_mixer(0.0, 0.0, 1.0, 0.5, 0.1, 10) is None


def test_mixup_mixes_images_and_targets_with_one_lambda():
    mixer = make_mixer(0.8, 0.0, 1.0, 0.5, 0.0, 10)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])  # all different, so each row names two classes
    lams = []
    for seed in range(5):
        np.random.seed(seed)  # timm draws lambda from numpy's global RNG
        x = torch.randn(8, 3, 6, 6)
        mixed, target = mixer(x.clone(), y)
        lam = float(target[0, y[0]])
        lams.append(lam)
        assert 0 < lam < 1
        assert torch.allclose(target.sum(1), torch.ones(8))
        expected = torch.zeros(8, 10)
        expected[torch.arange(8), y] += lam
        expected[torch.arange(8), y.flip(0)] += 1 - lam
        assert torch.allclose(target, expected, atol=1e-6)
        assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
    assert len(set(lams)) == 5  # a new lambda each batch


def test_cutmix_targets_follow_the_pasted_area():
    mixer = make_mixer(0.0, 1.0, 1.0, 0.5, 0.0, 10)
    y = torch.tensor([9, 8, 7, 6, 5, 4, 3, 2])
    shares = []
    for seed in range(5):
        np.random.seed(seed)
        x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 16, 16).clone()  # image i is all i
        mixed, target = mixer(x.clone(), y)
        assert torch.allclose(target.sum(1), torch.ones(8))
        for i in range(8):
            j = 7 - i  # the image it is mixed with
            own, pasted = (mixed[i] == i), (mixed[i] == j)
            assert (own | pasted).all()  # every pixel from one of the two
            share = pasted.float().mean().item()
            shares.append(share)
            assert target[i, y[j]].item() == pytest.approx(share, abs=1e-6)
            assert target[i, y[i]].item() == pytest.approx(1 - share, abs=1e-6)
            others = other_classes(10, y[i], y[j])
            assert (target[i, others] == 0).all()
    assert any(0 < share < 1 for share in shares)  # some box was pasted


def test_label_smoothing_spreads_evenly_and_the_rest_sits_on_the_two_mixed_labels():
    smoothing, classes = 0.1, 10
    mixer = make_mixer(0.8, 1.0, 1.0, 0.5, smoothing, classes)
    y = torch.tensor([3, 3, 1, 0, 9, 4, 5, 3])  # rows 0 and 7 mix two images of label 3
    off = smoothing / classes
    for seed in range(6):
        np.random.seed(seed)
        _, target = mixer(torch.randn(8, 3, 8, 8), y)
        assert torch.allclose(target.sum(1), torch.ones(8), atol=1e-6)
        assert (target >= off - 1e-7).all()
        for i in range(8):
            others = other_classes(classes, y[i], y.flip(0)[i])
            assert torch.allclose(target[i, others], torch.full((int(others.sum()),), off))
            assert target[i, ~others].sum().item() == pytest.approx(1 - off * int(others.sum()), abs=1e-6)


def test_mix_prob_zero_leaves_the_batch_alone():
    mixer = make_mixer(0.8, 1.0, 0.0, 0.5, 0.0, 10)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([1, 2, 3, 4])
    mixed, target = mixer(x.clone(), y)
    assert torch.equal(mixed, x) and torch.equal(target, F.one_hot(y, 10).float())


# ---------------------------------------------------------------- timm's policies (loader path)


@pytest.mark.parametrize("text", AUTO_AUGMENT_EXAMPLES)
def test_auto_augment_examples_build_on_arrays(cifar, text):
    ds, info = cifar
    assert check_auto_augment(text) is None
    aug = Augmentation(auto_augment=text)
    assert not aug.on_device and choose_path(ds, aug) == "loader"
    seed_all(0)
    batches = make_batches(ds, 64, "cpu", shuffle=False, augmentation=aug, workers=0)
    assert batches.path == "loader"
    xs, ys = collect(batches)
    assert xs.dtype == torch.float32 and tuple(xs.shape) == (len(ds), 3, 32, 32) and torch.isfinite(xs).all()
    assert torch.equal(ys, ds.labels)  # in order, each with its own image
    plain = ds.tensors[0]
    assert (xs - plain).flatten(1).abs().amax(1).gt(1e-3).any()  # the policy did something


@pytest.mark.parametrize("text", AUTO_AUGMENT_EXAMPLES)
def test_auto_augment_examples_build_on_image_folders(folder, text):
    ds, info = folder
    seed_all(0)
    batches = make_batches(ds, 4, "cpu", shuffle=False, augmentation=Augmentation(auto_augment=text), workers=0)
    assert batches.path == "loader"
    xs, ys = collect(batches)
    assert xs.dtype == torch.float32 and tuple(xs.shape) == (len(ds), 3, 32, 32) and torch.isfinite(xs).all()
    assert torch.equal(ys, torch.from_numpy(ds.labels))
    plain = torch.stack([ds[i][0] for i in range(len(ds))])  # the same resize and crop without the policy
    assert (xs - plain).flatten(1).abs().amax(1).gt(1e-3).any()


@pytest.mark.parametrize("text", ["randaugment", "autoaugment", "rand m9", "", "RAND-m9", "trivialaugment"])
def test_bad_auto_augment_string_is_refused_naming_the_accepted_forms(text):
    message = check_auto_augment(text)
    assert message is not None and f'"{text}"' in message
    for form in ("cifar10", "svhn", "imagenet", "rand-m9-mstd0.5-inc1", "original", "augmix-m5-w4-d2", "3a"):
        assert form in message


def test_cifar10_policy_is_torchvisions_cifar10_autoaugment():
    """The dual-attention reference's CIFAR policy, not timm's ImageNet "original"."""
    policy = timm_policy("cifar10", 32, IMAGENET_MEAN)
    assert type(policy).__name__ == "AutoAugment" and policy.policy.name == "CIFAR10"
    assert timm_policy("svhn", 32, IMAGENET_MEAN).policy.name == "SVHN"


# The plan-time check must not accept a string timm's parsers reject, or the run would fail in its worker.
@pytest.mark.parametrize("text", ["rand-x5", "3a-m5", "augmix-q3", "original-m9", "rand-m9-tfoo-n2-mstd0.5-inc1"])
def test_every_accepted_auto_augment_string_builds_a_policy(text):
    if check_auto_augment(text) is None:
        timm_policy(text, 32, IMAGENET_MEAN)
    else:
        with pytest.raises(AssertionError):
            timm_policy(text, 32, IMAGENET_MEAN)


# ---------------------------------------------------------------- random-resized crops


def test_choose_path():
    array = ImageArray(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2), max_value=255, img_size=8,
                       mean=(0.5,) * 3, std=(0.5,) * 3)
    assert choose_path(array, None) == "device"
    assert choose_path(array, Augmentation(crop="pad", hflip=0.5)) == "device"
    assert choose_path(array, Augmentation(crop="resized")) == "loader"
    assert choose_path(array, Augmentation(auto_augment="3a")) == "loader"
    with pytest.raises(ValueError, match="path must be one of"):
        make_batches(array, 2, "cpu", shuffle=False, path="gpu")
    with pytest.raises(ValueError, match="use the loader path"):
        make_batches(array, 2, "cpu", shuffle=False, augmentation=Augmentation(crop="resized"), path="device")


def test_image_folders_always_take_the_loader_path(folder):
    ds, _ = folder
    assert choose_path(ds, None) == "loader" and choose_path(ds, Augmentation(crop="pad")) == "loader"
    with pytest.raises(ValueError, match="needs an in-memory dataset"):
        make_batches(ds, 2, "cpu", shuffle=False, path="device")


def test_resized_crop_goes_to_the_loader_and_comes_out_at_img_size(tmp_path, folder):
    root = write_cifar10(tmp_path)
    ds, info = build_dataset("cifar10", root=str(root), split="train", img_size=48)
    aug = Augmentation(crop="resized", crop_scale=0.25, hflip=0.5)
    seed_all(0)
    batches = make_batches(ds, 64, "cpu", shuffle=True, augmentation=aug, workers=0)
    assert isinstance(batches, LoaderBatches)
    xs, ys = collect(batches)
    assert tuple(xs.shape) == (len(ds), 3, 48, 48) and torch.isfinite(xs).all()
    assert torch.equal(brightness_label(unnormalize(xs, info)), ys)  # a crop of the image keeps its brightness
    fds, finfo = folder
    xs, ys = collect(make_batches(fds, 4, "cpu", shuffle=True, augmentation=aug, workers=0))
    assert tuple(xs.shape) == (len(fds), 3, 32, 32)
    assert torch.equal(brightness_label(unnormalize(xs, finfo)), ys)
