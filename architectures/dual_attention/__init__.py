"""Dual-attention transformer: what can be set, and its registration (torch-free; the model is
in ``model.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._registry import register
from ..hparams import Activation, Hparams, changed_default, patch_divides


class DualAttentionHparams(Hparams):
    """Dual-attention transformer, vision variant (Altabaa & Lafferty): each layer mixes ``sa``
    self-attention heads with ``ra`` relational-attention heads; ``ra = 0`` is the paper's ViT
    baseline. Names follow the reference's CIFAR script (Awni00/abstract_transformer,
    ``experiments/vision_cifar10/train.py``); "NA" is its spelling for "no relational heads".
    The defaults of ``activation``, ``attn_out_bias``, ``init_scheme`` and ``decay_scheme``
    follow the reference code; ``was`` is what runs trained before they did."""

    sa: int = Field(6, ge=0, description="self-attention heads per layer")
    ra: int = Field(6, ge=0, description="relational-attention heads per layer")
    symbol_type: Literal["positional_symbols", "position_relative", "symbolic_attention", "NA"] = "position_relative"
    ra_type: Literal["relational_attention", "rca", "disrca", "NA"] = "relational_attention"
    n_relations: int | None = Field(None, ge=1, description="relations per token pair; default ra")
    symmetric_rels: bool = Field(False, description="tie the relation query/key maps so r_ij = r_ji (no effect on rca)")
    rel_activation: Literal["identity", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh"] = Field(
        "identity", description="activation of the relations (relational_attention and disrca); the reference's "
                                '"gelu" is gelu_tanh here')
    n_kv_heads: int | None = Field(None, ge=1, description="grouped-query attention: key/value heads per part; "
                                                            "default one per query head")
    n_symbols: int | None = Field(None, ge=1, description="symbol library size (symbolic_attention); default #patches")
    symbol_heads: int = Field(4, ge=1, description="heads of symbolic attention")
    n_layers: int = Field(8, ge=1)
    d_model: int = Field(384, ge=1)
    dff: int | None = Field(None, ge=1, description="feed-forward width; default 4 * d_model")
    activation: Activation = changed_default(
        "gelu_tanh", was="gelu",
        description='feed-forward activation; the reference\'s "gelu" is the tanh approximation (gelu_tanh)')
    attn_out_bias: bool | None = changed_default(
        None, was=False,
        description="bias on the attention output projections (W_o of both parts); unset: as the reference, "
                    "on for the ViT baseline (ra = 0, its EncoderBlock) and off for dual attention")
    init_scheme: Literal["reference", "trunc_normal"] = changed_default(
        "reference", was="trunc_normal",
        description="reference: PyTorch's default Linear init, position embedding and class token N(0, 1), "
                    "W_r Kaiming-uniform; trunc_normal: every Linear weight, W_r, the position embedding and the "
                    "class token trunc-normal(0.02), Linear biases zero")
    decay_scheme: Literal["reference", "weights_only"] = changed_default(
        "reference", was="weights_only",
        description="which parameters weight decay applies to; reference: all of them (its "
                    "torch.optim.Adam(model.parameters(), weight_decay=...)); weights_only: timm's rule, "
                    "tensors of 2 or more dimensions")
    dropout_rate: float = Field(0.0, ge=0.0, lt=1.0)
    norm_first: bool = True
    patch_size: int = Field(4, ge=1)
    pool: Literal["cls", "mean"] = "mean"

    def out_bias(self) -> bool:
        """Whether the attention output projections have a bias (``attn_out_bias``, resolved)."""
        return self.ra == 0 if self.attn_out_bias is None else self.attn_out_bias

    def check(self, *, img_size, in_chans, num_classes):
        heads = self.sa + self.ra
        if heads == 0:
            return "sa", "a layer needs at least one head: sa + ra >= 1"
        if self.ra == 0 and (self.ra_type != "NA" or self.symbol_type != "NA"):
            key = "ra_type" if self.ra_type != "NA" else "symbol_type"
            return key, 'ra = 0 has no relational heads; set ra_type = "NA" and symbol_type = "NA" (a plain ViT)'
        if self.ra > 0 and "NA" in (self.ra_type, self.symbol_type):
            key = "ra_type" if self.ra_type == "NA" else "symbol_type"
            return key, f'{self.ra} relational heads need a {key}; choose one that is not "NA"'
        if self.d_model % heads:
            return "d_model", f"sa + ra = {heads} heads do not divide d_model {self.d_model}"
        if self.n_kv_heads is not None and any(h % self.n_kv_heads for h in (self.sa, self.ra) if h):
            return "n_kv_heads", f"{self.n_kv_heads} key/value heads must divide sa = {self.sa} and ra = {self.ra}"
        head_dim, n_rel = self.d_model // heads, self.n_relations or self.ra
        if self.ra and (head_dim * self.ra) % n_rel:
            return "n_relations", f"{n_rel} relations do not divide ra * head_dim = {head_dim * self.ra}"
        if self.symbol_type == "symbolic_attention" and self.d_model % self.symbol_heads:
            return "symbol_heads", f"{self.symbol_heads} symbol heads do not divide d_model {self.d_model}"
        return patch_divides(self.patch_size, img_size)


register("dual_attention", DualAttentionHparams, "architectures.dual_attention.model:build",
         "dual-attention transformer: self-attention + relational-attention heads (Altabaa et al.)", attention=True)
