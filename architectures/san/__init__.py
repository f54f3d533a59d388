"""Self-attention networks (SAN): what can be set, and the pairwise and patchwise registrations
(torch-free; the model is in ``model.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._registry import register
from ..hparams import Hparams, changed_default


class SANHparams(Hparams):
    """Self-attention networks (Zhao, Jia, Koltun 2020): ResNet-like stages of local self-attention."""

    layout: Literal["san10", "san15", "san19"] = "san10"
    kernels: list[int] = Field([3, 7, 7, 7, 7], min_length=5, max_length=5,
                               description="footprint (window side) per stage")
    widths: list[int] = Field([64, 256, 512, 1024, 2048], min_length=5, max_length=5)
    stem_width: int = Field(64, ge=1)
    pools: int | None = Field(None, ge=0, le=5,
                              description="2x2 max-pools (at the last stages); default: 5 at 224 px, fewer on small images")
    decay_scheme: Literal["reference", "weights_only"] = changed_default(
        "reference", was="weights_only",
        description="which parameters weight decay applies to. reference: all of them, as hszhao/SAN's "
                    "train.py (SGD over model.parameters()), BatchNorm scales and shifts and biases included; "
                    "weights_only: timm's rule (ndim < 2 exempt), what runs used before")

    def check(self, *, img_size, in_chans, num_classes):
        if any(k < 1 or k % 2 == 0 for k in self.kernels):
            return "kernels", f"footprints must be odd and positive, got {self.kernels}"
        if any(w % 32 for w in self.widths):
            return "widths", f"widths must be multiples of 32 (mid = width/4 shares mid/8 weight channels), got {self.widths}"
        pools = self.pools if self.pools is not None else san_pools(img_size)
        if img_size % (2**pools):
            return "pools", f"{pools} 2x2 pools need an image size divisible by {2**pools}, got {img_size}"
        return None


def san_pools(img_size: int) -> int:
    """Pools so the last stage is about 7x7 at 224 px and at least 4x4 on small images."""
    pools = 0
    while pools < 5 and img_size % 2 ** (pools + 1) == 0 and img_size // 2 ** (pools + 1) >= 4:
        pools += 1
    return pools


class SANPairwiseHparams(SANHparams):
    relation: Literal["subtraction", "summation", "concatenation", "hadamard", "dot"] = "subtraction"


class SANPatchwiseHparams(SANHparams):
    relation: Literal["concatenation", "star", "clique"] = "concatenation"


register("san_pairwise", SANPairwiseHparams, "architectures.san.model:build_pairwise",
         "SAN with pairwise self-attention (Zhao, Jia, Koltun 2020)", attention=True)
register("san_patchwise", SANPatchwiseHparams, "architectures.san.model:build_patchwise",
         "SAN with patchwise self-attention (Zhao, Jia, Koltun 2020)", attention=True)
