"""Per-image transforms, for the DataLoader path: image folders always, in-memory arrays when
the recipe asks for what only works image by image (random-resized crops, timm's policies).

For arrays the steps are the device path's, one image at a time: crop/flip on the stored
uint8 pixels, then (if asked) timm's policy on a PIL image, then ``ImageArray.normalize``,
the same function the device path ends with. So both paths draw from one distribution.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torchvision.transforms import v2

from .arrays import ImageArray
from .augmentation import TORCHVISION_POLICIES, Augmentation
from .options import DatasetInfo


def timm_policy(text: str, img_size: int, mean: tuple[float, ...]) -> Callable:
    """The recipe's ``auto_augment`` on PIL images: torchvision's AutoAugment with the named
    dataset's policy (``"cifar10"``, ``"svhn"``, ``"imagenet"``), or timm's RandAugment / AugMix /
    AutoAugment with create_transform's parameters."""
    if text in TORCHVISION_POLICIES:
        return v2.AutoAugment(v2.AutoAugmentPolicy[TORCHVISION_POLICIES[text]])
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    params = {"translate_const": int(img_size * 0.45), "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
    if text.startswith("rand"):
        return rand_augment_transform(text, params)
    if text.startswith("augmix"):
        return augment_and_mix_transform(text, params | {"translate_pct": 0.3})
    return auto_augment_transform(text, params)


def _policy_on_uint8(policy: Callable, max_value: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply a PIL policy to a uint8 CHW tensor; pixels stored on another scale (digits: 0..16)
    are stretched to 0..255 and back, grey images go through as L mode."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        if max_value != 255:
            x = (x.float() * (255 / max_value)).round().to(torch.uint8)
        out = v2.functional.pil_to_tensor(policy(v2.functional.to_pil_image(x)))
        if max_value != 255:
            out = (out.float() * (max_value / 255)).round().to(torch.uint8)
        return out

    return apply


def array_train_transform(array: ImageArray, aug: Augmentation) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 CHW image of ``array`` -> augmented, normalized float image."""
    native = array.images.shape[-1]
    steps: list[Callable] = []
    if aug.crop == "pad":
        steps.append(v2.RandomCrop(native, padding=aug.crop_padding))
    elif aug.crop == "resized":
        steps.append(v2.RandomResizedCrop(native, scale=(aug.crop_scale, 1.0), antialias=True))
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.auto_augment:
        steps.append(_policy_on_uint8(timm_policy(aug.auto_augment, array.img_size, array.mean), array.max_value))
    steps.append(lambda x: array.normalize(x[None])[0])
    return v2.Compose(steps)


def folder_train_transform(info: DatasetInfo, crop_pct: float, aug: Augmentation) -> Callable:
    """PIL image -> augmented, normalized float image of side ``img_size``."""
    size = info.img_size
    if aug.crop == "resized":
        steps: list[Callable] = [v2.RandomResizedCrop(size, scale=(aug.crop_scale, 1.0), antialias=True)]
    else:
        steps = [v2.Resize(math.floor(size / crop_pct), antialias=True), v2.CenterCrop(size)]
        if aug.crop == "pad":
            steps.append(v2.RandomCrop(size, padding=aug.crop_padding))
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.auto_augment:
        steps.append(timm_policy(aug.auto_augment, size, info.mean))
    return v2.Compose([*steps, *_to_normalized(info)])


def eval_transform(info: DatasetInfo, crop_pct: float) -> Callable:
    """PIL image -> resize to ``img_size / crop_pct``, center crop ``img_size``, normalize."""
    size = info.img_size
    return v2.Compose([v2.Resize(math.floor(size / crop_pct), antialias=True), v2.CenterCrop(size),
                       *_to_normalized(info)])


def _to_normalized(info: DatasetInfo) -> list[Callable]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(info.mean), list(info.std)),
            v2.ToPureTensor()]
