"""Full-pixel attention of Cordonnier et al.: what can be set, and its registration (torch-free;
the model is in ``model.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._registry import register
from ..hparams import Hparams, changed_default


class ConvAttentionHparams(Hparams):
    """Full-pixel self-attention of Cordonnier, Loukas, Jaggi (2020) after a space-to-depth
    down-sampling, with a quadratic (Gaussian) or learned 2-D relative positional encoding."""

    positional_encoding: Literal["quadratic", "learned_2d"] = "quadratic"
    use_content: bool = Field(False, description="add content (query-key) scores; learned_2d only")
    content_form: Literal["q_dot_r", "u_dot_r"] = Field(
        "q_dot_r",
        description="with use_content, how position enters. q_dot_r: (q.k + q.r) / sqrt(d), the query's two "
                    "halves scoring row and column tables of width d/2 (the paper's formula, Ramachandran et "
                    "al.'s q.k + q.r; 29.48 M on CIFAR-10; the reference's query_positional_score = True); "
                    "u_dot_r: q.k / sqrt(d) plus the content-free learned_2d term u_h.r (unscaled, tables of "
                    "width d; what epfml/attention-cnn 9ffaa30, the commit with the paper's run scripts, builds "
                    "for use_attention_data = True; 29.60 M)")
    anisotropic: bool = Field(False, description="quadratic: full 2x2 covariance per head instead of isotropic")
    d_model: int = Field(400, ge=1)
    n_layers: int = Field(6, ge=1)
    heads: int = Field(9, ge=1)
    dff: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    downsample: int = Field(2, ge=1, description="space-to-depth factor before the attention layers")
    init_scheme: Literal["reference", "bert"] = changed_default(
        "reference", was="bert",
        description="reference: what epfml/attention-cnn's BertImage has at construction, PyTorch's defaults "
                    "(Linear kaiming-uniform weights and uniform biases, bound 1/sqrt(fan_in); relative-position "
                    "tables N(0, 1) as its nn.Embedding; LayerNorm 1 and 0; centres N(0, 2^2), spreads "
                    "1 + N(0, 0.01^2)); bert: N(0, 0.02) Linear weights and tables, zero biases (BERT's "
                    "init_bert_weights, which the reference defines but never applies), what runs used before")
    decay_scheme: Literal["reference", "weights_only"] = changed_default(
        "reference", was="weights_only",
        description="which parameters weight decay applies to. reference: all but the Gaussian centres and "
                    "spreads (epfml/attention-cnn train.py exempts names with attention_centers or "
                    "attention_spreads; biases, LayerNorms and tables decay); weights_only: timm's rule "
                    "(ndim < 2 exempt), what runs used before")
    dropout_mask: Literal["per_batch", "per_image"] = changed_default(
        "per_batch", was="per_image",
        description="content-free attention (quadratic, learned_2d without content): per_batch draws one dropout "
                    "mask on the attention probabilities for the whole batch, as the reference (its probabilities "
                    "have no batch dimension); per_image one mask per image, what runs used before. With content "
                    "the mask is per image either way")

    def check(self, *, img_size, in_chans, num_classes):
        if self.use_content and self.positional_encoding == "quadratic":
            return "use_content", 'the quadratic encoding is content-free; use positional_encoding = "learned_2d"'
        if self.content_form != "q_dot_r" and not self.use_content:
            return "content_form", "content_form applies with use_content = true only"
        if self.anisotropic and self.positional_encoding != "quadratic":
            return "anisotropic", 'anisotropic applies to positional_encoding = "quadratic" only'
        if img_size % self.downsample:
            return "downsample", f"space-to-depth by {self.downsample} needs it to divide the image size {img_size}"
        return None


register("conv_attention", ConvAttentionHparams, "architectures.conv_attention.model:build",
         "full-pixel attention with quadratic or learned 2-D relative encoding (Cordonnier et al. 2020)",
         attention=True)
