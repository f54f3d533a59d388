"""Vision Transformer: what can be set, and its registration (torch-free; the model is in ``model.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._registry import register
from ..hparams import Activation, Hparams, changed_default, heads_divide, patch_divides, same_chans


class ViTHparams(Hparams):
    """Vision Transformer (Dosovitskiy et al. 2021): patches, cls token, learned positions."""

    patch_size: int = Field(4, ge=1)
    dim: int = Field(256, ge=1)
    depth: int = Field(6, ge=1)
    heads: int = Field(8, ge=1)
    mlp_dim: int | None = Field(512, ge=1, description="hidden width of the MLP; or give mlp_ratio")
    mlp_ratio: float | None = Field(None, gt=0, description="MLP width as a multiple of dim (timm style)")
    activation: Activation = "gelu"
    norm_first: bool = Field(True, description="pre-LN blocks (ViT); false gives post-LN (original Transformer)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pool: Literal["cls", "mean"] = "cls"
    in_chans: int | None = Field(None, ge=1, description="defaults to the dataset's; must match it if given")
    norm_eps: float = changed_default(1e-6, was=1e-5, gt=0.0, description="LayerNorm epsilon; timm's ViT uses 1e-6")
    init_scheme: Literal["reference", "trunc_normal"] = changed_default(
        "reference", was="trunc_normal",
        description="reference: timm's ViT init (class token N(0, 1e-6)); trunc_normal: class token trunc-normal(0.02) too")

    def hidden(self) -> int:
        """MLP width: mlp_ratio wins when given (set mlp_dim = ... alone for an absolute width)."""
        return round(self.mlp_ratio * self.dim) if self.mlp_ratio is not None else self.mlp_dim

    def check(self, *, img_size, in_chans, num_classes):
        if self.mlp_dim is None and self.mlp_ratio is None:
            return "mlp_dim", "give mlp_dim or mlp_ratio"
        return (heads_divide("heads", self.heads, "dim", self.dim) or patch_divides(self.patch_size, img_size)
                or same_chans(self.in_chans, in_chans))


register("vit", ViTHparams, "architectures.vit.model:build", "Vision Transformer, cls token, pre-norm, SDPA",
         attention=True)
