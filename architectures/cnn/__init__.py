"""Convolutional baselines: what can be set, and the ResNet registrations (torch-free; the
model is in ``model.py``)."""

from __future__ import annotations

from pydantic import Field

from .._registry import register
from ..hparams import Hparams


class ResNetCifarHparams(Hparams):
    """ResNet-18/34 for small images: 3x3 stride-1 stem, no max-pool (He et al. 2016)."""

    width: int = Field(64, ge=1, description="channels of the first stage; 64 is the paper's ResNet")


register("resnet18_cifar", ResNetCifarHparams, "architectures.cnn.model:build_resnet18_cifar",
         "ResNet-18 with a 3x3 stride-1 stem and no max-pool, for small images", attention=False)
register("resnet34_cifar", ResNetCifarHparams, "architectures.cnn.model:build_resnet34_cifar",
         "ResNet-34 with a 3x3 stride-1 stem and no max-pool, for small images", attention=False)
