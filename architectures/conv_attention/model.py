"""Full-pixel self-attention: "On the Relationship between Self-Attention and
Convolutional Layers" (Cordonnier, Loukas, Jaggi, ICLR 2020),
https://arxiv.org/abs/1911.03584, reference code https://github.com/epfml/attention-cnn.

The image is cut by a ``downsample`` x ``downsample`` space-to-depth (32x32x3 ->
16x16x12), every pixel of that grid becomes a token (Linear 12 -> d_model, no
absolute position), and post-LN layers of multi-head attention over *all* pixels
follow. Positions enter only through a relative score, one of:

* ``quadratic`` (content-free): with delta = key pixel - query pixel,
  ``score_h = -1/2 (delta - Delta_h)^T Sigma_h^-1 (delta - Delta_h)``; isotropic
  ``Sigma^-1 = alpha_h^2 I`` or, with ``anisotropic``, ``Sigma^-1 = W_h W_h^T``.
  With K^2 heads centred on the K x K offsets and alpha -> infinity the layer *is*
  a K x K convolution (the paper's theorem; tested numerically).
* ``learned_2d`` (content-free): ``score_h = u_h^row . e_row[d_row] + u_h^col . e_col[d_col]``
  with learned tables of (2 side - 1) relative offsets, unscaled.
* ``learned_2d`` with ``use_content``: per-head query and key of full width d and
  ``score_h = (q.k + q[:d/2] . e_row[d_row] + q[d/2:] . e_col[d_col]) / sqrt(d)``
  (tables of width d/2), the positional part passed to ``scaled_dot_product_attention``
  as an additive mask.

Projections follow the reference code (its ``BertImage`` / ``GaussianSelfAttention``
/ ``Learned2DRelativeSelfAttention``), which sets the parameter counts: a head
has no value projection of its own; every head averages the full-width input
(d each, so heads x d in all) and one ``value`` Linear(heads x d -> d) mixes them,
which is the per-head value projections and the output projection multiplied
together. BERT's attention-output Linear(d -> d) follows it, then the residual and
LayerNorm, then the GELU FFN d -> dff -> d, residual and LayerNorm. Mean-pool over
pixels, linear head. Init N(0, 0.02) for linear weights and tables, centres
N(0, 2^2), spreads 1 + N(0, 0.01^2) (identity + noise when anisotropic).

On 32x32x3 with 10 classes and the defaults: quadratic 12,086,844 parameters,
quadratic anisotropic 12,087,006, learned_2d 12,278,682, learned_2d + content
29,484,282 (paper: 12.1 M, 12.3 M, 29.5 M).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ConvAttentionHparams

LN_EPS = 1e-12  # the reference's BertLayerNorm


def _grid_offsets(side: int) -> torch.Tensor:
    """``[query, key, 2]``: (row, col) of key pixel minus query pixel, pixels in row-major order."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    coords = torch.stack([rows, cols], dim=-1).view(-1, 2)
    return coords.unsqueeze(0) - coords.unsqueeze(1)


def _positional_attend(scores: torch.Tensor, x: torch.Tensor, dropout: float, training: bool) -> torch.Tensor:
    """Content-free attention: ``scores`` [H, N, N] are the same for every image, so the
    softmax is taken once and applied to all of ``x`` [B, N, D] by one matmul
    (``scaled_dot_product_attention`` would need a zero q.k and redo the softmax per
    image). In training, dropout on the probabilities draws one mask per image, as
    the reference does. Returns [B, H, N, D]."""
    probs = scores.softmax(dim=-1)
    if training and dropout > 0:
        probs = F.dropout(probs.expand(x.shape[0], -1, -1, -1), dropout)
        return probs @ x.unsqueeze(1)
    return torch.einsum("hnm,bmd->bhnd", probs, x)


class QuadraticAttention(nn.Module):
    """Gaussian positional attention: head h looks around ``query + centres[h]`` with
    inverse covariance ``inv_covariance()[h]``; no content scores."""

    def __init__(self, dim: int, heads: int, side: int, *, anisotropic: bool = False, dropout: float = 0.0,
                 out_dim: int | None = None):
        super().__init__()
        self.heads, self.side, self.anisotropic, self.dropout = heads, side, anisotropic, dropout
        self.centres = nn.Parameter(torch.empty(heads, 2))  # Delta_h as (row, col)
        # alpha_h (isotropic) or W_h (anisotropic, Sigma^-1 = W W^T)
        self.spreads = nn.Parameter(torch.empty(heads, 2, 2) if anisotropic else torch.empty(heads))
        self.value = nn.Linear(heads * dim, out_dim or dim)
        self.register_buffer("offsets", _grid_offsets(side).float(), persistent=False)  # [N, N, 2]
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.centres.normal_(0.0, 2.0)
        if self.anisotropic:
            self.spreads.copy_(torch.eye(2).expand(self.heads, 2, 2) + 0.01 * torch.randn(self.heads, 2, 2))
        else:
            self.spreads.normal_(1.0, 0.01)

    def inv_covariance(self) -> torch.Tensor:
        """Sigma_h^-1, [H, 2, 2] (symmetric positive semi-definite by construction)."""
        if self.anisotropic:
            return self.spreads @ self.spreads.transpose(1, 2)
        return self.spreads.pow(2)[:, None, None] * torch.eye(2, dtype=self.spreads.dtype, device=self.spreads.device)

    def centres_and_spreads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For probes: the learned centres Delta_h [H, 2] (row, col offsets in grid pixels)
        and spreads Sigma_h^-1 [H, 2, 2], detached."""
        return self.centres.detach().clone(), self.inv_covariance().detach().clone()

    def scores(self) -> torch.Tensor:
        """``-1/2 (delta - Delta_h)^T Sigma_h^-1 (delta - Delta_h)`` for every head, query, key: [H, N, N]."""
        # Elementwise on purpose: no cancellation of large terms, and autocast leaves it in fp32.
        inv = self.inv_covariance()[:, :, :, None, None]  # [H, 2, 2, 1, 1]
        u = self.offsets.permute(2, 0, 1).unsqueeze(0) - self.centres[:, :, None, None]  # [H, 2, N, N]
        ur, uc = u[:, 0], u[:, 1]
        return -0.5 * (inv[:, 0, 0] * ur * ur + 2 * inv[:, 0, 1] * ur * uc + inv[:, 1, 1] * uc * uc)

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """For probes (``attention.GlobalAttention``): [B, H, N, N], the same for every image (content-free)."""
        return self.scores().softmax(dim=-1).expand(x.shape[0], -1, -1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        out = _positional_attend(self.scores(), x, self.dropout, self.training)  # [B, H, N, D]
        return self.value(out.transpose(1, 2).reshape(b, n, self.heads * d))


class Learned2DAttention(nn.Module):
    """Learned relative 2-D encoding: a row table and a column table indexed by the
    key - query offset (2 side - 1 entries each), optionally plus content scores."""

    def __init__(self, dim: int, heads: int, side: int, *, use_content: bool = False, dropout: float = 0.0,
                 out_dim: int | None = None):
        super().__init__()
        self.heads, self.side, self.use_content, self.dropout = heads, side, use_content, dropout
        offsets = torch.arange(side)
        # [query, key] -> table row of the offset key - query
        self.register_buffer("rel_index", offsets.view(1, -1) - offsets.view(-1, 1) + side - 1, persistent=False)
        if use_content:
            # the query's first half scores the row offset, its second half the column offset
            self.row_dim, col_dim = dim // 2, dim - dim // 2
            self.query = nn.Linear(dim, heads * dim)
            self.key = nn.Linear(dim, heads * dim)
        else:
            self.row_dim = col_dim = dim
            self.row_keys = nn.Linear(dim, heads, bias=False)  # u_h^row
            self.col_keys = nn.Linear(dim, heads, bias=False)  # u_h^col
        self.row_table = nn.Parameter(torch.empty(2 * side - 1, self.row_dim))
        self.col_table = nn.Parameter(torch.empty(2 * side - 1, col_dim))
        self.value = nn.Linear(heads * dim, out_dim or dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.row_table, std=0.02)
        nn.init.normal_(self.col_table, std=0.02)

    def positional_scores(self, q: torch.Tensor | None = None) -> torch.Tensor:
        """Without content [H, N, N]; with the queries q [B, H, N, D] (unscaled) [B, H, N, N]."""
        s, h = self.side, self.heads
        e_row = self.row_table[self.rel_index]  # [query row i, key row k, d]
        e_col = self.col_table[self.rel_index]  # [query col j, key col l, d]
        if q is None:
            row = self.row_keys(e_row).permute(2, 0, 1)  # [H, i, k]
            col = self.col_keys(e_col).permute(2, 0, 1)  # [H, j, l]
            return (row[:, :, None, :, None] + col[:, None, :, None, :]).reshape(h, s * s, s * s)
        b = q.shape[0]
        q = q.view(b, h, s, s, -1)
        row = torch.einsum("bhijd,ikd->bhijk", q[..., : self.row_dim], e_row)
        col = torch.einsum("bhijd,jld->bhijl", q[..., self.row_dim:], e_col)
        return (row[..., :, None] + col[..., None, :]).reshape(b, h, s * s, s * s)

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """For probes (``attention.GlobalAttention``): the softmax weights of every head, [B, H, N, N]."""
        b, n, d = x.shape
        if not self.use_content:
            return self.positional_scores().softmax(dim=-1).expand(b, -1, -1, -1)
        q = self.query(x).view(b, n, self.heads, d).transpose(1, 2)
        k = self.key(x).view(b, n, self.heads, d).transpose(1, 2)
        return ((q @ k.transpose(-1, -2) + self.positional_scores(q)) / math.sqrt(d)).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        if self.use_content:
            q = self.query(x).view(b, n, self.heads, d).transpose(1, 2)
            k = self.key(x).view(b, n, self.heads, d).transpose(1, 2)
            bias = self.positional_scores(q) / math.sqrt(d)  # SDPA scales q.k by 1/sqrt(d) itself
            out = F.scaled_dot_product_attention(q, k, x.unsqueeze(1).expand(b, self.heads, n, d), attn_mask=bias,
                                                 dropout_p=self.dropout if self.training else 0.0)
        else:
            out = _positional_attend(self.positional_scores(), x, self.dropout, self.training)
        return self.value(out.transpose(1, 2).reshape(b, n, self.heads * d))


class Block(nn.Module):
    """Post-LN: x = norm1(x + drop(proj(attn(x)))), x = norm2(x + drop(fc2(gelu(fc1(x)))))."""

    def __init__(self, attn: nn.Module, dim: int, dff: int, dropout: float):
        super().__init__()
        self.attn = attn
        self.proj = nn.Linear(dim, dim)  # BERT's attention-output dense, kept by the reference
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, dff), nn.GELU(), nn.Linear(dff, dim), nn.Dropout(dropout))
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.proj(self.attn(x))))
        return self.norm2(x + self.mlp(x))


class ConvAttentionNet(nn.Module):
    def __init__(self, hp: ConvAttentionHparams, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        problem = hp.check(img_size=img_size, in_chans=in_chans, num_classes=num_classes)
        if problem is not None:
            raise ValueError(f"conv_attention: {problem[0]}: {problem[1]}")
        self.img_size, self.downsample = img_size, hp.downsample
        self.side = img_size // hp.downsample
        side = img_size // hp.downsample
        d = hp.d_model

        def attention() -> nn.Module:
            if hp.positional_encoding == "quadratic":
                return QuadraticAttention(d, hp.heads, side, anisotropic=hp.anisotropic, dropout=hp.dropout)
            return Learned2DAttention(d, hp.heads, side, use_content=hp.use_content, dropout=hp.dropout)

        self.embed = nn.Linear(in_chans * hp.downsample**2, d)
        self.blocks = nn.Sequential(*[Block(attention(), d, hp.dff, hp.dropout) for _ in range(hp.n_layers)])
        self.head = nn.Linear(d, num_classes)
        self.apply(_init_linear)

    def space_to_depth(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, (H/r)(W/r), r*r*C] tokens in row-major order; a token's
        features ordered (row in block, column in block, channel) as in the reference."""
        b, c, h, w = x.shape
        r = self.downsample
        if h != self.img_size or w != self.img_size:
            raise ValueError(f"conv_attention was built for {self.img_size}x{self.img_size} images, got {h}x{w}")
        x = x.permute(0, 2, 3, 1).reshape(b, h // r, r, w // r, r, c).transpose(2, 3)
        return x.reshape(b, (h // r) * (w // r), r * r * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(self.space_to_depth(x)))
        return self.head(x.mean(dim=1))

    def token_grid(self) -> tuple[int, int, int]:
        """For probes (``attention.TokenGrid``): every pixel of the space-to-depth grid is a token; no class token."""
        return self.side, self.side, 0

    def gaussian_heads(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For probes (``attention.GaussianHeads``): per layer (quadratic encoding only), centres
        Delta_h [H, 2] and spreads Sigma_h^-1 [H, 2, 2]."""
        return [blk.attn.centres_and_spreads() for blk in self.blocks if isinstance(blk.attn, QuadraticAttention)]


def _init_linear(m: nn.Module, std: float = 0.02) -> None:
    """The reference's BERT init: N(0, std) linear weights (not truncated), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build(hp: ConvAttentionHparams, *, num_classes: int, in_chans: int, img_size: int) -> ConvAttentionNet:
    return ConvAttentionNet(hp, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
