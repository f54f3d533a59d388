"""Hyperparameters of every architecture family: types, defaults and constraints.

They live apart from the model code on purpose: ``runner plan`` validates a whole
study against them without importing torch (3-5 s here). Each family's model file
builds its ``nn.Module`` from an instance of the class declared here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Hparams(BaseModel):
    """Base: unknown keys and loose types are refused (``heads = "8"`` is an error)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def check(self, *, img_size: int, in_chans: int, num_classes: int) -> tuple[str, str] | None:
        """Cross-check against the dataset: ``(key, problem)`` or None when possible."""
        return None


class ViTHparams(Hparams):
    """Vision Transformer (Dosovitskiy et al. 2021): patches, cls token, pre-norm blocks."""

    patch_size: int = Field(4, ge=1)
    dim: int = Field(256, ge=1)
    depth: int = Field(6, ge=1)
    heads: int = Field(8, ge=1)
    mlp_dim: int = Field(512, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pool: Literal["cls", "mean"] = "cls"

    def check(self, *, img_size, in_chans, num_classes):
        if self.dim % self.heads:
            return "heads", f"{self.heads} heads do not divide dim {self.dim}; choose heads among {_divisors(self.dim)}"
        if img_size % self.patch_size:
            return "patch_size", (
                f"patch size {self.patch_size} does not divide the image size {img_size}; "
                f"choose among {_divisors(img_size)}"
            )
        return None


class ResNetCifarHparams(Hparams):
    """ResNet-18 for small images: 3x3 stride-1 stem, no max-pool (He et al. 2016)."""

    width: int = Field(64, ge=1, description="channels of the first stage; 64 is the paper's ResNet-18")


class TimmHparams(BaseModel):
    """Any timm model: keyword arguments pass through to ``timm.create_model`` unchecked."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def check(self, *, img_size, in_chans, num_classes):
        return None


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
