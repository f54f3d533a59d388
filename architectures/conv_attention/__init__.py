"""Full-pixel attention of Cordonnier et al.: what can be set, and its registration (torch-free;
the model is in ``model.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._registry import register
from ..hparams import Hparams


class ConvAttentionHparams(Hparams):
    """Full-pixel self-attention of Cordonnier, Loukas, Jaggi (2020) after a space-to-depth
    down-sampling, with a quadratic (Gaussian) or learned 2-D relative positional encoding."""

    positional_encoding: Literal["quadratic", "learned_2d"] = "quadratic"
    use_content: bool = Field(False, description="add content (query-key) scores; learned_2d only")
    anisotropic: bool = Field(False, description="quadratic: full 2x2 covariance per head instead of isotropic")
    d_model: int = Field(400, ge=1)
    n_layers: int = Field(6, ge=1)
    heads: int = Field(9, ge=1)
    dff: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    downsample: int = Field(2, ge=1, description="space-to-depth factor before the attention layers")

    def check(self, *, img_size, in_chans, num_classes):
        if self.use_content and self.positional_encoding == "quadratic":
            return "use_content", 'the quadratic encoding is content-free; use positional_encoding = "learned_2d"'
        if self.anisotropic and self.positional_encoding != "quadratic":
            return "anisotropic", 'anisotropic applies to positional_encoding = "quadratic" only'
        if img_size % self.downsample:
            return "downsample", f"space-to-depth by {self.downsample} needs it to divide the image size {img_size}"
        return None


register("conv_attention", ConvAttentionHparams, "architectures.conv_attention.model:build",
         "full-pixel attention with quadratic or learned 2-D relative encoding (Cordonnier et al. 2020)",
         attention=True)
