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


Activation = Literal["gelu", "relu", "silu"]


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

    def hidden(self) -> int:
        """MLP width: mlp_ratio wins when given (set mlp_dim = ... alone for an absolute width)."""
        return round(self.mlp_ratio * self.dim) if self.mlp_ratio is not None else self.mlp_dim

    def check(self, *, img_size, in_chans, num_classes):
        if self.mlp_dim is None and self.mlp_ratio is None:
            return "mlp_dim", "give mlp_dim or mlp_ratio"
        return (_heads_divide("heads", self.heads, "dim", self.dim) or _patch_divides(self.patch_size, img_size)
                or _same_chans(self.in_chans, in_chans))


class DualAttentionHparams(Hparams):
    """Dual-attention transformer, vision variant (Altabaa et al.): each layer mixes ``sa``
    self-attention heads with ``ra`` relational-attention heads. The flags and defaults of the
    reference ImageNet script; "NA" is its spelling for "no relational heads"."""

    sa: int = Field(6, ge=0, description="self-attention heads per layer")
    ra: int = Field(6, ge=0, description="relational-attention heads per layer")
    symbol_type: Literal["positional_symbols", "position_relative", "symbolic_attention", "NA"] = "position_relative"
    ra_type: Literal["relational_attention", "rca", "disrca", "NA"] = "relational_attention"
    n_relations: int | None = Field(None, ge=1, description="relations per token pair; default ra")
    symmetric_rels: bool = Field(False, description="tie the relation query/key maps so r_ij = r_ji (no effect on rca)")
    rel_activation: Literal["identity", "relu", "sigmoid", "tanh", "gelu"] = Field(
        "identity", description="activation of the relations (relational_attention and disrca)")
    n_kv_heads: int | None = Field(None, ge=1, description="grouped-query attention: key/value heads per part; "
                                                            "default one per query head")
    n_symbols: int | None = Field(None, ge=1, description="symbol library size (symbolic_attention); default #patches")
    symbol_heads: int = Field(4, ge=1, description="heads of symbolic attention")
    n_layers: int = Field(8, ge=1)
    d_model: int = Field(384, ge=1)
    dff: int | None = Field(None, ge=1, description="feed-forward width; default 4 * d_model")
    activation: Activation = "gelu"
    dropout_rate: float = Field(0.0, ge=0.0, lt=1.0)
    norm_first: bool = True
    patch_size: int = Field(4, ge=1)
    pool: Literal["cls", "mean"] = "mean"

    def check(self, *, img_size, in_chans, num_classes):
        heads = self.sa + self.ra
        if heads == 0:
            return "sa", "a layer needs at least one head: sa + ra >= 1"
        if self.ra == 0 and (self.ra_type != "NA" or self.symbol_type != "NA"):
            key = "ra_type" if self.ra_type != "NA" else "symbol_type"
            return key, f'ra = 0 has no relational heads; set ra_type = "NA" and symbol_type = "NA" (a plain ViT)'
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
        return _patch_divides(self.patch_size, img_size)


class SANHparams(Hparams):
    """Self-attention networks (Zhao, Jia, Koltun 2020): ResNet-like stages of local self-attention."""

    layout: Literal["san10", "san15", "san19"] = "san10"
    kernels: list[int] = Field([3, 7, 7, 7, 7], min_length=5, max_length=5,
                               description="footprint (window side) per stage")
    widths: list[int] = Field([64, 256, 512, 1024, 2048], min_length=5, max_length=5)
    stem_width: int = Field(64, ge=1)
    pools: int | None = Field(None, ge=0, le=5,
                              description="2x2 max-pools (at the last stages); default: 5 at 224 px, fewer on small images")

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


class ResNetCifarHparams(Hparams):
    """ResNet-18/34 for small images: 3x3 stride-1 stem, no max-pool (He et al. 2016)."""

    width: int = Field(64, ge=1, description="channels of the first stage; 64 is the paper's ResNet")


class TimmHparams(BaseModel):
    """Any timm model: keyword arguments pass through to ``timm.create_model`` unchecked,
    except ``pretrained``, which needs weights from the hub (an error where none can be had)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    pretrained: bool = False

    def check(self, *, img_size, in_chans, num_classes):
        return None


def _heads_divide(heads_key: str, heads: int, dim_key: str, dim: int):
    if dim % heads:
        return heads_key, f"{heads} heads do not divide {dim_key} {dim}; choose {heads_key} among {_divisors(dim)}"
    return None


def _patch_divides(patch: int, img_size: int):
    if img_size % patch:
        return "patch_size", f"patch size {patch} does not divide the image size {img_size}; choose among {_divisors(img_size)}"
    return None


def _same_chans(declared: int | None, actual: int):
    if declared is not None and declared != actual:
        return "in_chans", f"the dataset has {actual} channel(s), not {declared}; leave in_chans out to follow the dataset"
    return None


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
