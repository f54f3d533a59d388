"""What a training split goes through, as the recipe states it: torch-free, so ``runner plan``
checks a timm auto-augment string without importing timm."""

from __future__ import annotations

import re
from dataclasses import dataclass

# timm's auto-augment config strings: "rand-m9-mstd0.5-inc1" (RandAugment), "augmix-m5-w4-d2",
# "original" / "originalr" / "v0" / "v0r" (AutoAugment policies, e.g. "original-mstd0.5"), "3a" (3-Augment).
_NUM = r"\d[\d.]*"
_AUTO_AUGMENT = re.compile(  # the sections timm's parsers accept; anything else would fail in the worker
    rf"^(?:rand(?:-(?:(?:mstd|mmax|inc|m|n|p){_NUM}|t[a-z_]+))*"
    rf"|augmix(?:-(?:mstd|m|w|d|a|b){_NUM})*"
    rf"|(?:original|originalr|v0|v0r|3a)(?:-mstd{_NUM})*)$")


# torchvision's AutoAugment policies (Cubuk et al. learned one per dataset); timm's "original" is the
# ImageNet one only, while CIFAR papers (the dual-attention reference among them) use the CIFAR-10 policy.
TORCHVISION_POLICIES = {"cifar10": "CIFAR10", "svhn": "SVHN", "imagenet": "IMAGENET"}


def check_auto_augment(text: str) -> str | None:
    """None when ``text`` names a torchvision AutoAugment policy or is a config string timm's
    ``create_transform(auto_augment=...)`` takes."""
    if text in TORCHVISION_POLICIES or _AUTO_AUGMENT.fullmatch(text):
        return None
    return (f'"{text}" is not an auto-augment policy; use "cifar10", "svhn" or "imagenet" (torchvision\'s '
            f'AutoAugment policies) or a timm string such as "rand-m9-mstd0.5-inc1" (RandAugment), '
            f'"original" (AutoAugment, ImageNet policy), "augmix-m5-w4-d2" or "3a"')


@dataclass(frozen=True)
class Augmentation:
    """What the training split goes through; the recipe's keys of the same names.

    crop: "none"; "pad" (pad ``crop_padding`` px of zeros, crop back at random: CIFAR style);
    "resized" (random-resized crop, area share in ``[crop_scale, 1]``: ImageNet style).
    hflip: probability of a horizontal flip. auto_augment: a torchvision policy name, a timm
    config string, or None; applied after the crop and flip."""

    crop: str = "none"
    crop_padding: int = 4
    crop_scale: float = 0.08
    hflip: float = 0.0
    auto_augment: str | None = None

    @property
    def on_device(self) -> bool:
        """Whether the GPU-resident path can apply it batch-wise: pad-crop and flip can,
        random-resized crops and timm's PIL policies go through DataLoader workers."""
        return self.crop in ("none", "pad") and self.auto_augment is None
