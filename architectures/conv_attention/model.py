"""Full-pixel self-attention: "On the Relationship between Self-Attention and
Convolutional Layers" (Cordonnier, Loukas, Jaggi, ICLR 2020),
https://arxiv.org/abs/1911.03584, reference code https://github.com/epfml/attention-cnn,
matched at commit 9ffaa3061da11e7246534a6d5ce1cfe5a2a77000 (the one with the paper's run
scripts ``runs/*/run.sh``; model in ``models/bert.py`` and ``models/transformer.py``,
training in ``train.py``).

The image is cut by a ``downsample`` x ``downsample`` space-to-depth (32x32x3 ->
16x16x12), every pixel of that grid becomes a token (Linear 12 -> d_model, no
absolute position), and post-LN layers of multi-head attention over *all* pixels
follow. Positions enter only through a relative score, one of:

* ``quadratic`` (content-free): with delta = key pixel - query pixel,
  ``score_h = -1/2 (delta - Delta_h)^T Sigma_h^-1 (delta - Delta_h)``; isotropic
  ``Sigma^-1 = alpha_h^2 I`` or, with ``anisotropic``, ``Sigma^-1 = W_h W_h^T``.
  (The reference drops the constant ``Delta^T Sigma^-1 Delta``, which the softmax
  ignores.) With K^2 heads centred on the K x K offsets and alpha -> infinity the
  layer *is* a K x K convolution (the paper's theorem; tested numerically).
* ``learned_2d`` (content-free): ``score_h = u_h^row . e_row[d_row] + u_h^col . e_col[d_col]``
  with learned tables of (2 side - 1) relative offsets, unscaled.
* ``learned_2d`` with ``use_content``, two forms (``content_form``):

  - ``q_dot_r`` (default): per-head query and key of full width d and
    ``score_h = (q.k + q[:d/2] . e_row[d_row] + q[d/2:] . e_col[d_col]) / sqrt(d)``
    (tables of width d/2): the paper's formula (Ramachandran et al.'s q.k + q.r) and its
    29.5 M parameters; in the reference's lineage it is ``use_attention_data`` with
    ``query_positional_score``, an option added after 9ffaa30 whose own docstring says the
    other combination "was not used" (seen in code derived from the reference; that epfml
    commit itself is not in the store searched).
  - ``u_dot_r``: ``score_h = q.k / sqrt(d) + u_h^row . e_row[d_row] + u_h^col . e_col[d_col]``,
    the positional term the content-free one, unscaled, tables of width d: what 9ffaa30's
    ``Learned2DRelativeSelfAttention`` builds for ``use_attention_data = True`` (29.60 M).

Projections follow the reference (``BertImage`` / ``GaussianSelfAttention`` /
``Learned2DRelativeSelfAttention``), which sets the parameter counts: a head has no value
projection of its own; every head averages the full-width input (d each, so heads x d in
all) and one ``value`` Linear(heads x d -> d) mixes them, which is the per-head value
projections and the output projection multiplied together. BERT's attention-output
Linear(d -> d) follows it, then dropout, the residual and LayerNorm (eps 1e-12, as
``BertLayerNorm``), then the FFN d -> dff -> d with erf GELU, dropout, residual and
LayerNorm. Dropout also on the attention probabilities; none on the embedding or before
the head. Mean-pool over pixels, linear head.

Init (``init_scheme = "reference"``): the reference never applies BERT's
``init_bert_weights`` to ``BertImage``, so it runs on PyTorch's defaults: Linear weights
kaiming-uniform and biases uniform, both within 1/sqrt(fan_in); the row and column tables
N(0, 1) (``nn.Embedding``); LayerNorm 1 and 0; centres N(0, 2^2), spreads 1 + N(0, 0.01^2)
(identity + N(0, 0.01^2) when anisotropic). ``"bert"`` is what runs used before: N(0, 0.02)
Linear weights and tables, zero biases.

Departures, deliberate: the tables have 2 side - 1 rows for the grid at hand, where the
reference sizes them from ``max_position_embeddings`` (16, so 31 rows: the same on
32x32 with downsample 2; ``load_reference_state_dict`` takes the middle rows). Names
follow the offsets they score: the reference's content-free ``row_embeddings`` /
``head_keys_row`` score the column offset (and ``col_*`` the row offset) because of how it
lays out its [rows, cols] grid; the key map swaps them. The training recipe (SGD, schedule,
augmentation) is the study's, not the model's; the reference's is in the report of this
change and in ``experiments.toml``.

On 32x32x3 with 10 classes and the defaults: quadratic 12,086,844 parameters, quadratic
anisotropic 12,087,006, learned_2d 12,278,682, learned_2d + content 29,484,282 (q_dot_r) or
29,601,882 (u_dot_r) (paper: 12.1 M, 12.3 M, 29.5 M).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ConvAttentionHparams

LN_EPS = 1e-12  # the reference's BertLayerNorm (config layer_norm_eps)
DECAY_EXEMPT = ("centres", "spreads")  # the reference's attention_centers, attention_spreads


def _grid_offsets(side: int) -> torch.Tensor:
    """``[query, key, 2]``: (row, col) of key pixel minus query pixel, pixels in row-major order."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    coords = torch.stack([rows, cols], dim=-1).view(-1, 2)
    return coords.unsqueeze(0) - coords.unsqueeze(1)


def _positional_attend(scores: torch.Tensor, x: torch.Tensor, dropout: float, training: bool,
                       per_image: bool) -> torch.Tensor:
    """Content-free attention: ``scores`` [H, N, N] are the same for every image, so the
    softmax is taken once and applied to all of ``x`` [B, N, D] by one matmul. In training,
    dropout on the probabilities draws one mask for the whole batch (the reference: its
    probabilities have no batch dimension) or, ``per_image``, one per image. Returns [B, H, N, D]."""
    probs = scores.softmax(dim=-1)
    if training and dropout > 0:
        if per_image:
            probs = F.dropout(probs.expand(x.shape[0], -1, -1, -1), dropout)
            return probs @ x.unsqueeze(1)
        probs = F.dropout(probs, dropout)
    return torch.einsum("hnm,bmd->bhnd", probs, x)


class QuadraticAttention(nn.Module):
    """Gaussian positional attention: head h looks around ``query + centres[h]`` with
    inverse covariance ``inv_covariance()[h]``; no content scores."""

    def __init__(self, dim: int, heads: int, side: int, *, anisotropic: bool = False, dropout: float = 0.0,
                 out_dim: int | None = None, dropout_mask: str = "per_batch"):
        super().__init__()
        self.heads, self.side, self.anisotropic, self.dropout = heads, side, anisotropic, dropout
        self.per_image_dropout = dropout_mask == "per_image"
        self.centres = nn.Parameter(torch.empty(heads, 2))  # Delta_h as (row, col)
        # alpha_h (isotropic) or W_h (anisotropic, Sigma^-1 = W W^T)
        self.spreads = nn.Parameter(torch.empty(heads, 2, 2) if anisotropic else torch.empty(heads))
        self.value = nn.Linear(heads * dim, out_dim or dim)
        self.register_buffer("offsets", _grid_offsets(side).float(), persistent=False)  # [N, N, 2]
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The reference's (and both schemes'): centres N(0, 2^2), spreads 1 + N(0, 0.01^2) or I + N(0, 0.01^2)."""
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
        out = _positional_attend(self.scores(), x, self.dropout, self.training, self.per_image_dropout)
        return self.value(out.transpose(1, 2).reshape(b, n, self.heads * d))


class Learned2DAttention(nn.Module):
    """Learned relative 2-D encoding: a row table and a column table indexed by the
    key - query offset (2 side - 1 entries each), optionally plus content scores
    (``content_form``: ``q_dot_r`` or ``u_dot_r``, see the module docstring)."""

    def __init__(self, dim: int, heads: int, side: int, *, use_content: bool = False, content_form: str = "q_dot_r",
                 dropout: float = 0.0, out_dim: int | None = None, dropout_mask: str = "per_batch",
                 table_std: float = 1.0):
        super().__init__()
        if content_form not in ("q_dot_r", "u_dot_r"):
            raise ValueError(f"unknown content_form {content_form!r}")
        self.heads, self.side, self.use_content, self.dropout = heads, side, use_content, dropout
        self.query_positional = use_content and content_form == "q_dot_r"  # q.r instead of u.r
        self.per_image_dropout = dropout_mask == "per_image"
        offsets = torch.arange(side)
        # [query, key] -> table row of the offset key - query
        self.register_buffer("rel_index", offsets.view(1, -1) - offsets.view(-1, 1) + side - 1, persistent=False)
        if use_content:
            self.query = nn.Linear(dim, heads * dim)
            self.key = nn.Linear(dim, heads * dim)
        if self.query_positional:
            # the query's first half scores the row offset, its second half the column offset
            self.row_dim, col_dim = dim // 2, dim - dim // 2
        else:
            self.row_dim = col_dim = dim
            self.row_keys = nn.Linear(dim, heads, bias=False)  # u_h^row
            self.col_keys = nn.Linear(dim, heads, bias=False)  # u_h^col
        self.row_table = nn.Parameter(torch.empty(2 * side - 1, self.row_dim))
        self.col_table = nn.Parameter(torch.empty(2 * side - 1, col_dim))
        self.value = nn.Linear(heads * dim, out_dim or dim)
        self.table_std = table_std
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Tables N(0, table_std^2): 1 is the reference's (``nn.Embedding``'s default), 0.02 the ``bert`` scheme."""
        nn.init.normal_(self.row_table, std=self.table_std)
        nn.init.normal_(self.col_table, std=self.table_std)

    def positional_scores(self, q: torch.Tensor | None = None) -> torch.Tensor:
        """u.r [H, N, N] (no queries), or with the queries q [B, H, N, D] q.r [B, H, N, N]; unscaled."""
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

    def _queries_keys(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        return (self.query(x).view(b, n, self.heads, d).transpose(1, 2),
                self.key(x).view(b, n, self.heads, d).transpose(1, 2))

    def _bias(self, q: torch.Tensor) -> torch.Tensor:
        """The positional part of the content scores, already in softmax units: q.r / sqrt(d) or u.r."""
        if self.query_positional:
            return self.positional_scores(q) / math.sqrt(q.shape[-1])
        return self.positional_scores()

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """For probes (``attention.GlobalAttention``): the softmax weights of every head, [B, H, N, N]."""
        b, n, d = x.shape
        if not self.use_content:
            return self.positional_scores().softmax(dim=-1).expand(b, -1, -1, -1)
        q, k = self._queries_keys(x)
        return (q @ k.transpose(-1, -2) / math.sqrt(d) + self._bias(q)).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        if self.use_content:
            q, k = self._queries_keys(x)  # SDPA scales q.k by 1/sqrt(d) itself
            out = F.scaled_dot_product_attention(q, k, x.unsqueeze(1).expand(b, self.heads, n, d),
                                                 attn_mask=self._bias(q),
                                                 dropout_p=self.dropout if self.training else 0.0)
        else:
            out = _positional_attend(self.positional_scores(), x, self.dropout, self.training, self.per_image_dropout)
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
        self.decay_scheme = hp.decay_scheme
        side = img_size // hp.downsample
        d = hp.d_model

        def attention() -> nn.Module:
            if hp.positional_encoding == "quadratic":
                return QuadraticAttention(d, hp.heads, side, anisotropic=hp.anisotropic, dropout=hp.dropout,
                                          dropout_mask=hp.dropout_mask)
            return Learned2DAttention(d, hp.heads, side, use_content=hp.use_content, content_form=hp.content_form,
                                      dropout=hp.dropout, dropout_mask=hp.dropout_mask,
                                      table_std=0.02 if hp.init_scheme == "bert" else 1.0)

        self.embed = nn.Linear(in_chans * hp.downsample**2, d)
        self.blocks = nn.Sequential(*[Block(attention(), d, hp.dff, hp.dropout) for _ in range(hp.n_layers)])
        self.head = nn.Linear(d, num_classes)
        if hp.init_scheme == "bert":  # the same draws, in the same order, as runs before init_scheme existed
            self.apply(_init_linear)
        # "reference": PyTorch's defaults as constructed (nn.Linear, nn.LayerNorm; tables N(0, 1))

    def decayed(self, name: str, p: nn.Parameter) -> bool:
        """Whether weight decay applies (``runner.train.optim``). ``reference``: all but the
        Gaussian centres and spreads (epfml/attention-cnn train.py, ``get_optimizer``: biases,
        LayerNorms and tables decay); ``weights_only``: ndim >= 2 (timm's rule)."""
        if self.decay_scheme == "reference":
            return name.rsplit(".", 1)[-1] not in DECAY_EXEMPT
        return p.ndim >= 2

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

    @torch.no_grad()
    def load_reference_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state dict of epfml/attention-cnn's ``BertImage`` (9ffaa30's module names) through
        ``reference_key_map``; the reference's buffers (``R``, ``relative_indices``, ``attention_mask``)
        are skipped. Tables of ``2 M - 1`` rows (``max_position_embeddings`` M >= side) give their
        middle ``2 side - 1`` rows, the offsets this grid has. Every parameter must be given."""
        own = dict(self.named_parameters())
        mapping = reference_key_map(self)
        seen = set()
        for key, value in state.items():
            if key.split(".")[-1] in ("R", "relative_indices", "attention_mask"):
                continue
            if key not in mapping:
                raise KeyError(f"no counterpart for the reference's {key!r}")
            mine = own[mapping[key]]
            if mapping[key].endswith("_table"):
                m = (value.shape[0] + 1) // 2
                if m < self.side:
                    raise ValueError(f"{key}: {value.shape[0]} rows cover offsets up to {m - 1}, "
                                     f"the grid needs {self.side - 1}")
                value = value[m - self.side: m + self.side - 1]
            if value.shape != mine.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)}, ours {mapping[key]} is {tuple(mine.shape)}")
            mine.copy_(value)
            seen.add(mapping[key])
        missing = sorted(set(own) - seen)
        if missing:
            raise KeyError(f"the reference state dict lacks {missing}")


def reference_key_map(model: ConvAttentionNet) -> dict[str, str]:
    """The reference's parameter names (``BertImage`` of epfml/attention-cnn 9ffaa30; for ``q_dot_r``
    the later ``query_positional_score`` layout) -> ours. In the content-free and ``u_dot_r`` layouts
    the reference's ``row_embeddings`` / ``head_keys_row`` score the column offset and ``col_*`` the
    row offset (its grid is [rows, cols] and ``row_scores`` is laid along the second axis), so they
    map crosswise; with ``q_dot_r`` its ``row_embeddings`` meets the query's first half along rows."""
    out = {"features_upscale.weight": "embed.weight", "features_upscale.bias": "embed.bias",
           "classifier.weight": "head.weight", "classifier.bias": "head.bias"}
    per_layer = {"attention.output.dense": "proj", "attention.output.LayerNorm": "norm1",
                 "intermediate.dense": "mlp.0", "output.dense": "mlp.2", "output.LayerNorm": "norm2",
                 "attention.self.value": "attn.value"}
    for i, blk in enumerate(model.blocks):
        ref, ours = f"encoder.layer.{i}.", f"blocks.{i}."
        for a, b in per_layer.items():
            for t in ("weight", "bias"):
                out[f"{ref}{a}.{t}"] = f"{ours}{b}.{t}"
        attn, s = blk.attn, f"{ref}attention.self."
        if isinstance(attn, QuadraticAttention):
            out[s + "attention_centers"] = ours + "attn.centres"
            out[s + "attention_spreads"] = ours + "attn.spreads"
            continue
        if attn.use_content:
            for a in ("query", "key"):
                for t in ("weight", "bias"):
                    out[f"{s}{a}.{t}"] = f"{ours}attn.{a}.{t}"
        if attn.query_positional:
            out[s + "row_embeddings.weight"] = ours + "attn.row_table"
            out[s + "col_embeddings.weight"] = ours + "attn.col_table"
        else:
            out[s + "row_embeddings.weight"] = ours + "attn.col_table"
            out[s + "col_embeddings.weight"] = ours + "attn.row_table"
            out[s + "head_keys_row.weight"] = ours + "attn.col_keys.weight"
            out[s + "head_keys_col.weight"] = ours + "attn.row_keys.weight"
    return out


def _init_linear(m: nn.Module, std: float = 0.02) -> None:
    """The ``bert`` scheme: N(0, std) linear weights (not truncated), zero biases, as BERT's
    ``init_bert_weights`` (which the reference defines but does not apply to its image model)."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build(hp: ConvAttentionHparams, *, num_classes: int, in_chans: int, img_size: int) -> ConvAttentionNet:
    return ConvAttentionNet(hp, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
