"""Dual-attention transformer, vision variant: "Disentangling and Integrating Relational and
Sensory Information in Transformer Architectures" (Altabaa & Lafferty, 2024),
https://arxiv.org/abs/2405.16727. Reference: Awni00/abstract_transformer at b7da583 (2024-11-24;
the paper's CIFAR runs were launched from 141000e, 2024-09-02, whose model code computes the
same for these options): ``vision_models.VisionDualAttnTransformer`` and, for ``ra = 0``, its
``VisionTransformer`` (the paper's ViT baseline), built by ``experiments/vision_cifar10/train.py``;
the PyPI package Awni00/dual-attention (a6ef87c) has the same layers but no final LayerNorm.

Each layer has ``sa`` ordinary self-attention heads and ``ra`` relational heads, all
``hd = d_model / (sa + ra)`` wide. The two parts have their own projections, q/k/v bias-free,
and their outputs are concatenated back to ``d_model``. A relational head ``h`` computes

    alpha^h_ij = softmax_j(<W_q^h x_i, W_k^h x_j> / sqrt(hd))
    r^l_ij     = act(<W_{q,l}^rel x_i, W_{k,l}^rel x_j> / sqrt(d_r)),   l = 1..n_r (no softmax)
    A^h_i      = sum_j alpha^h_ij (W_r^h r_ij + W_v^h s_j)

with ``W_k^rel = W_q^rel`` under ``symmetric_rels``. ``sum_j alpha r_ij`` is formed first
([B, N, h, n_r]) and projected by ``W_r`` afterwards, so no N x N x d tensor exists. The
ablations of the paper replace the head: ``rca`` (A_i = sum_j softmax(q_i.k_j) W_v s_j) and
``disrca`` (A_i = sum_j softmax(q_i.k_j) act(q'_i.k'_j / sqrt(hd)) W_v s_j, one scalar
relation per head).

The symbols s are recomputed from the current tokens before every layer by one retriever
shared by all layers: ``positional_symbols`` (a learned table over token positions),
``position_relative`` (a learned table over the clipped offsets j - i, +-(N) with N the
token count including the class token; s_j becomes s_{j-i}) or ``symbolic_attention``
(``symbol_heads``-head attention from Linear(x) onto learned template keys whose values are
a learned symbol library). Position-relative symbols are never expanded to [N, N, d]: the
attention weights are re-indexed by offset ("skewed", [.., N, 2N-1]) and multiplied with the
projected offset table.

Around the attention: patches are rearranged to (p1 p2 c) vectors -> LayerNorm -> Linear ->
LayerNorm, a class token is prepended and learned positions added; pre-LN blocks (post-LN
with ``norm_first = false``) whose feed-forward block has biases; pooling by the class token or
the mean over all tokens (class token included), then LayerNorm and a linear head.

What follows the reference by default (``changed_default``; the ``was`` value gives the
behaviour of runs trained before): ``activation = "gelu_tanh"`` (its "gelu" is
``nn.GELU(approximate="tanh")``); ``attn_out_bias`` unset: W_o has a bias in the ViT baseline
(its EncoderBlock passes ``add_bias_out = bias = True``) and none in dual attention (the CIFAR
script leaves ``add_bias_out`` at False), so the paper's CIFAR-10 ViT has 7,149,034 parameters
(7,145,962 with ``attn_out_bias = false``) and its DAT (sa 6, ra 6, position_relative,
symmetric_rels, n_kv_heads 3) 6,025,834; ``init_scheme = "reference"``: PyTorch's default init
of every Linear and LayerNorm, position embedding and class token N(0, 1), W_r Kaiming-uniform
(a = sqrt(5)) on its [h, hd, n_r] tensor, the relative table Xavier-uniform, symbol tables
N(0, 1) (the same distributions; the random stream differs, our q/k/v being fused);
``decay_scheme = "reference"``: ``decayed`` is true for every parameter (its
``torch.optim.Adam(model.parameters(), weight_decay=5e-5)``). ``load_reference_state_dict``
loads a reference state dict (``reference_key_map``).

Departures from the reference, on purpose: the rca/disrca ablations work here (the reference
calls an activation helper it never imports, and its CIFAR script passes them relation
arguments they do not take) and disrca also takes ``symmetric_rels``; dropout is applied once
to the attention weights and once to each residual branch (the reference drops the attention
output twice, inside the attention and in the block, adds one after post-LN's first norm, and
drops symbolic attention's weights in eval too when given a rate); ``n_kv_heads`` also works
with ``ra = 0`` (the reference's ViT ignores it); ``rel_activation = "gelu"`` is exact GELU
(the reference's is ``"gelu_tanh"`` here). Not offered: RoPE, RMSNorm, shared attention
parameters, fixed symbols (``update_symbols_each_layer = False``) and ``rel_sym_attn``, all off
in the paper's vision runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import activation, trunc_normal_init
from . import DualAttentionHparams


# --- tensor helpers --------------------------------------------------------------------------

def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, heads * hd] -> [B, heads, N, hd]."""
    b, n, _ = t.shape
    return t.view(b, n, heads, -1).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, hd] -> [B, N, heads * hd]."""
    b, h, n, hd = t.shape
    return t.transpose(1, 2).reshape(b, n, h * hd)


def repeat_kv(t: torch.Tensor, rep: int, dim: int = 1) -> torch.Tensor:
    """Grouped-query attention: key/value head g serves query heads g*rep .. g*rep + rep - 1."""
    return t if rep == 1 else t.repeat_interleave(rep, dim=dim)


def skew(w: torch.Tensor) -> torch.Tensor:
    """Re-index attention weights by offset: [..., N, N] at (i, j) -> [..., N, 2N-1] at
    (i, j - i + N - 1), zeros elsewhere. Pads and reshapes only (O(N^2) memory, deterministic)."""
    n = w.shape[-1]
    z = F.pad(w, (n - 1, n - 1))  # [..., N, 3N-2]: z[i, t] = w[i, t - (N - 1)]
    flat = F.pad(z.flatten(-2), (0, n))  # N (3N-1) elements: rows of stride 3N-1 shift by one per row
    return flat.view(*w.shape[:-2], n, 3 * n - 1)[..., : 2 * n - 1]


def offset_index(n: int, max_rel: int, device=None) -> torch.Tensor:
    """Row of the relative table for each offset k - (n - 1), k = 0 .. 2n-2, clipped to +-max_rel."""
    return (torch.arange(2 * n - 1, device=device) - (n - 1)).clamp(-max_rel, max_rel) + max_rel


def attend_relative(weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """sum_j weights[b, h, i, j] * table[h, clip(j - i) + m] without the [N, N, hd] gather.

    weights: [B, h, N, N]; table: [h, 2m + 1, hd] (already value-projected) -> [B, h, N, hd].
    """
    n, max_rel = weights.shape[-1], (table.shape[-2] - 1) // 2
    return skew(weights) @ table[:, offset_index(n, max_rel, weights.device)]


# --- symbol retrievers (one per model, shared by the layers) ---------------------------------

class PositionalSymbols(nn.Module):
    """s_i = E[i], a learned table over token positions (N(0, 1) like ``nn.Embedding``)."""

    relative = False

    def __init__(self, n_tokens: int, d_model: int):
        super().__init__()
        self.symbols = nn.Parameter(torch.randn(n_tokens, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.symbols[: x.shape[1]].unsqueeze(0)  # [1, N, d], broadcast over the batch


class PositionRelativeSymbols(nn.Module):
    """A learned table over relative offsets -max_rel .. max_rel (Xavier-uniform, as the
    reference); the relational heads index it by clip(j - i)."""

    relative = True

    def __init__(self, max_rel: int, d_model: int):
        super().__init__()
        self.max_rel = max_rel
        self.table = nn.Parameter(torch.empty(2 * max_rel + 1, d_model))
        nn.init.xavier_uniform_(self.table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table  # [2m + 1, d]


class SymbolicAttention(nn.Module):
    """Multi-head attention from Linear(x) onto ``n_symbols`` learned template keys whose
    values are a learned symbol library (both N(0, 1))."""

    relative = False

    def __init__(self, d_model: int, heads: int, n_symbols: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d_model, d_model)
        self.templates = nn.Parameter(torch.randn(n_symbols, d_model))
        self.library = nn.Parameter(torch.randn(n_symbols, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q = split_heads(self.query(x), self.heads)
        k = split_heads(self.templates.unsqueeze(0), self.heads).expand(b, -1, -1, -1)
        v = split_heads(self.library.unsqueeze(0), self.heads).expand(b, -1, -1, -1)
        return merge_heads(F.scaled_dot_product_attention(q, k, v))


# --- attention -------------------------------------------------------------------------------

class SelfAttention(nn.Module):
    """``heads`` ordinary attention heads of width ``head_dim`` (grouped-query with
    ``kv_heads < heads``); bias-free q/k/v projections, a bias on W_o with ``out_bias``; output
    ``heads * head_dim`` wide."""

    def __init__(self, d_model: int, heads: int, head_dim: int, kv_heads: int, dropout: float,
                 out_bias: bool = False):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.dropout = heads, kv_heads, head_dim, dropout
        self.splits = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
        self.qkv = nn.Linear(d_model, sum(self.splits), bias=False)
        self.wo = nn.Linear(heads * head_dim, heads * head_dim, bias=out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.splits, dim=-1)
        out = F.scaled_dot_product_attention(
            split_heads(q, self.heads), split_heads(k, self.kv_heads), split_heads(v, self.kv_heads),
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.kv_heads != self.heads)
        return self.wo(merge_heads(out))


class _SymbolHeads(nn.Module):
    """Shared parts of the relational heads: W_v on the symbols, W_o, and the aggregation
    sum_j w_ij W_v s_j for per-token symbols [B or 1, N, d] or a relative table [2m+1, d]."""

    def __init__(self, d_model: int, heads: int, head_dim: int, kv_heads: int, dropout: float, relative: bool,
                 out_bias: bool = False):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.rep = heads // kv_heads
        self.relative = relative
        self.wv = nn.Linear(d_model, kv_heads * head_dim, bias=False)
        self.wo = nn.Linear(heads * head_dim, heads * head_dim, bias=out_bias)
        self.attn_drop = nn.Dropout(dropout)

    def symbol_values(self, symbols: torch.Tensor) -> torch.Tensor:
        """W_v s per query head: [B or 1, h, N, hd], or [h, 2m+1, hd] for a relative table."""
        if self.relative:
            table = self.wv(symbols).view(symbols.shape[0], self.kv_heads, self.head_dim).transpose(0, 1)
            return repeat_kv(table, self.rep, dim=0)
        return repeat_kv(split_heads(self.wv(symbols), self.kv_heads), self.rep)

    def attend_symbols(self, weights: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        """sum_j weights_ij W_v s_j (s_{j-i} for relative symbols): [B, h, N, hd]."""
        values = self.symbol_values(symbols)
        return attend_relative(weights, values) if self.relative else weights @ values

    def attention(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """softmax_j(q_i . k_j / sqrt(hd)) for q [B, N, h*hd], k [B, N, kv*hd] -> [B, h, N, N]."""
        q, k = split_heads(q, self.heads), repeat_kv(split_heads(k, self.kv_heads), self.rep)
        return torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim), dim=-1)


class RelationalAttention(_SymbolHeads):
    """A^h_i = sum_j alpha^h_ij (W_r^h r_ij + W_v^h s_j), r_ij in R^{n_r}; then W_o."""

    def __init__(self, d_model: int, heads: int, head_dim: int, kv_heads: int, dropout: float, relative: bool,
                 n_relations: int, rel_dim: int, symmetric: bool, rel_activation: str, out_bias: bool = False,
                 init_scheme: str = "reference"):
        super().__init__(d_model, heads, head_dim, kv_heads, dropout, relative, out_bias)
        self.n_relations, self.rel_dim, self.symmetric = n_relations, rel_dim, symmetric
        # x-side projections fused: W_q^attn, W_k^attn, W_q^rel and (unless symmetric) W_k^rel
        self.splits = [heads * head_dim, kv_heads * head_dim] + [n_relations * rel_dim] * (1 if symmetric else 2)
        self.proj = nn.Linear(d_model, sum(self.splits), bias=False)
        self.wr = nn.Parameter(torch.empty(heads, head_dim, n_relations))  # W_r^h: R^{n_r} -> R^{hd}
        if init_scheme == "reference":  # as nn.Linear's weights: U(+-1/sqrt(fan_in)), fan_in = hd * n_r here
            nn.init.kaiming_uniform_(self.wr, a=math.sqrt(5))
        else:
            nn.init.trunc_normal_(self.wr, std=0.02)
        self.rel_act = activation(rel_activation)

    def _relations(self, qr: torch.Tensor, kr: torch.Tensor) -> torch.Tensor:
        qr, kr = split_heads(qr, self.n_relations), split_heads(kr, self.n_relations)
        return self.rel_act((qr @ kr.transpose(-1, -2)) / math.sqrt(self.rel_dim))  # [B, n_r, N, N]

    def relations(self, x: torch.Tensor) -> torch.Tensor:
        """r_ij for every pair: [B, n_r, N, N] (symmetric in i, j under ``symmetric_rels``)."""
        parts = self.proj(x).split(self.splits, dim=-1)
        return self._relations(parts[2], parts[2] if self.symmetric else parts[3])

    def forward(self, x: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        parts = self.proj(x).split(self.splits, dim=-1)
        alpha = self.attn_drop(self.attention(parts[0], parts[1]))  # [B, h, N, N]
        rel = self._relations(parts[2], parts[2] if self.symmetric else parts[3])  # [B, n_r, N, N]
        # sum_j alpha^h_ij r_ij, batched over (b, i): [B, N, h, N] @ [B, N, N, n_r] -> [B, N, h, n_r]
        attended_rel = alpha.transpose(1, 2) @ rel.permute(0, 2, 3, 1)
        out = torch.einsum("bihr,hdr->bhid", attended_rel, self.wr) + self.attend_symbols(alpha, symbols)
        return self.wo(merge_heads(out))


class RelationalCrossAttention(_SymbolHeads):
    """Ablation ``rca``: A_i = sum_j softmax_j(q_i . k_j / sqrt(hd)) W_v s_j; then W_o."""

    def __init__(self, d_model: int, heads: int, head_dim: int, kv_heads: int, dropout: float, relative: bool,
                 out_bias: bool = False):
        super().__init__(d_model, heads, head_dim, kv_heads, dropout, relative, out_bias)
        self.dropout = dropout
        self.splits = [heads * head_dim, kv_heads * head_dim]
        self.proj = nn.Linear(d_model, sum(self.splits), bias=False)

    def forward(self, x: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        q, k = self.proj(x).split(self.splits, dim=-1)
        if self.relative:
            out = self.attend_symbols(self.attn_drop(self.attention(q, k)), symbols)
        else:  # plain attention with the symbols as values
            b = x.shape[0]
            v = split_heads(self.wv(symbols), self.kv_heads).expand(b, -1, -1, -1)
            out = F.scaled_dot_product_attention(
                split_heads(q, self.heads), split_heads(k, self.kv_heads), v,
                dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.rep != 1)
        return self.wo(merge_heads(out))


class DisentangledRelationalCrossAttention(_SymbolHeads):
    """Ablation ``disrca``: A_i = sum_j softmax_j(q_i . k_j / sqrt(hd)) act(q'_i . k'_j / sqrt(hd)) W_v s_j,
    one scalar relation per head (q' = k' maps tied under ``symmetric_rels``); then W_o."""

    def __init__(self, d_model: int, heads: int, head_dim: int, kv_heads: int, dropout: float, relative: bool,
                 symmetric: bool, rel_activation: str, out_bias: bool = False):
        super().__init__(d_model, heads, head_dim, kv_heads, dropout, relative, out_bias)
        self.symmetric = symmetric
        self.splits = [heads * head_dim, kv_heads * head_dim, heads * head_dim] + ([] if symmetric else [kv_heads * head_dim])
        self.proj = nn.Linear(d_model, sum(self.splits), bias=False)
        self.rel_act = activation(rel_activation)

    def _relations(self, qr: torch.Tensor, kr: torch.Tensor) -> torch.Tensor:
        qr = split_heads(qr, self.heads)
        kr = split_heads(kr, self.heads) if self.symmetric else repeat_kv(split_heads(kr, self.kv_heads), self.rep)
        return self.rel_act((qr @ kr.transpose(-1, -2)) / math.sqrt(self.head_dim))  # [B, h, N, N]

    def relations(self, x: torch.Tensor) -> torch.Tensor:
        """The scalar relation of each head for every pair: [B, h, N, N]."""
        parts = self.proj(x).split(self.splits, dim=-1)
        return self._relations(parts[2], parts[2] if self.symmetric else parts[3])

    def forward(self, x: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        parts = self.proj(x).split(self.splits, dim=-1)
        weights = self.attention(parts[0], parts[1]) * self._relations(parts[2], parts[2] if self.symmetric else parts[3])
        return self.wo(merge_heads(self.attend_symbols(self.attn_drop(weights), symbols)))


class DualAttention(nn.Module):
    """concat(SelfAttention(x), RelationalHeads(x, symbols)) -> [B, N, d_model]; no shared projection."""

    def __init__(self, hp: DualAttentionHparams, kv_heads: int, relative: bool):
        super().__init__()
        head_dim = hp.d_model // (hp.sa + hp.ra)
        common = dict(d_model=hp.d_model, head_dim=head_dim, dropout=hp.dropout_rate, out_bias=hp.out_bias())
        self.self_attn = (SelfAttention(heads=hp.sa, kv_heads=min(kv_heads, hp.sa), **common)
                          if hp.sa else None)
        self.rel_attn = None
        if hp.ra:
            common.update(heads=hp.ra, kv_heads=min(kv_heads, hp.ra), relative=relative)
            if hp.ra_type == "relational_attention":
                n_rel = hp.n_relations or hp.ra
                self.rel_attn = RelationalAttention(n_relations=n_rel, rel_dim=head_dim * hp.ra // n_rel,
                                                    symmetric=hp.symmetric_rels, rel_activation=hp.rel_activation,
                                                    init_scheme=hp.init_scheme, **common)
            elif hp.ra_type == "rca":
                self.rel_attn = RelationalCrossAttention(**common)
            elif hp.ra_type == "disrca":
                self.rel_attn = DisentangledRelationalCrossAttention(
                    symmetric=hp.symmetric_rels, rel_activation=hp.rel_activation, **common)
            else:
                raise ValueError(f"ra_type {hp.ra_type!r} needs ra = 0")

    def forward(self, x: torch.Tensor, symbols: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.self_attn is not None:
            parts.append(self.self_attn(x))
        if self.rel_attn is not None:
            parts.append(self.rel_attn(x, symbols))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def attention_probs(self, x: torch.Tensor, symbols: torch.Tensor | None = None) -> torch.Tensor:
        """For probes (``attention.GlobalAttention``): the softmax attention of every head, the ``sa``
        heads then the ``ra`` heads (their alpha; disrca's relation factor is left out), [B, sa + ra, N, N]."""
        parts = []
        if self.self_attn is not None:
            a = self.self_attn
            q, k, _ = a.qkv(x).split(a.splits, dim=-1)
            q, k = split_heads(q, a.heads), repeat_kv(split_heads(k, a.kv_heads), a.heads // a.kv_heads)
            parts.append(torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(a.head_dim), dim=-1))
        if self.rel_attn is not None:
            q, k = self.rel_attn.proj(x).split(self.rel_attn.splits, dim=-1)[:2]
            parts.append(self.rel_attn.attention(q, k))
        return torch.cat(parts, dim=1)


class Block(nn.Module):
    """Pre-LN: x + drop(DA(LN x)), then x + drop(FFN(LN x)). Post-LN: LN(x + drop(DA(x))), ..."""

    def __init__(self, hp: DualAttentionHparams, kv_heads: int, relative: bool):
        super().__init__()
        d, dff = hp.d_model, hp.dff or 4 * hp.d_model
        self.norm_first = hp.norm_first
        self.norm1 = nn.LayerNorm(d)
        self.attn = DualAttention(hp, kv_heads, relative)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, dff), activation(hp.activation), nn.Linear(dff, d))
        self.drop = nn.Dropout(hp.dropout_rate)

    def forward(self, x: torch.Tensor, symbols: torch.Tensor | None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), symbols))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, symbols)))
        return self.norm2(x + self.drop(self.mlp(x)))


# --- model -----------------------------------------------------------------------------------

class DualAttentionTransformer(nn.Module):
    """ViDAT (the reference's ``VisionDualAttnTransformer``), or with ``ra = 0`` its
    ``VisionTransformer``. ``hp.n_kv_heads`` (grouped-query attention in both parts, as in the
    paper's CIFAR runs) defaults to one key/value head per query head."""

    def __init__(self, hp: DualAttentionHparams, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        problem = hp.check(img_size=img_size, in_chans=in_chans, num_classes=num_classes)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        kv = hp.n_kv_heads or max(hp.sa, hp.ra)  # each part takes min(kv, its heads)
        d, p = hp.d_model, hp.patch_size
        self.patch_size, self.pool = p, hp.pool
        self.grid = img_size // p
        num_patches = (img_size // p) ** 2
        n_tokens = num_patches + 1
        patch_dim = p * p * in_chans
        self.patch_embed = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, d), nn.LayerNorm(d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, d))
        self.pos_drop = nn.Dropout(hp.dropout_rate)
        if hp.ra == 0:
            self.symbols = None
        elif hp.symbol_type == "positional_symbols":
            self.symbols = PositionalSymbols(n_tokens, d)
        elif hp.symbol_type == "position_relative":
            self.symbols = PositionRelativeSymbols(n_tokens, d)  # offsets +-N, as the reference (max_rel_pos)
        elif hp.symbol_type == "symbolic_attention":
            self.symbols = SymbolicAttention(d, hp.symbol_heads, hp.n_symbols or num_patches)
        else:
            raise ValueError(f"symbol_type {hp.symbol_type!r} needs ra = 0")
        relative = self.symbols is not None and self.symbols.relative
        self.blocks = nn.ModuleList([Block(hp, kv, relative) for _ in range(hp.n_layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)
        self.vit = hp.ra == 0  # the reference builds its VisionTransformer then (other parameter names)
        self.decay_scheme = hp.decay_scheme
        if hp.init_scheme == "reference":  # Linear, LayerNorm, symbols: as constructed (PyTorch's defaults)
            nn.init.normal_(self.pos_embed)
            nn.init.normal_(self.cls_token)
        else:
            self.apply(trunc_normal_init)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def decayed(self, name: str, p: torch.Tensor) -> bool:
        """Whether weight decay applies to parameter ``name`` (``runner.train.optim.param_groups``):
        every parameter under ``decay_scheme = "reference"`` (its CIFAR script hands
        ``model.parameters()`` to ``torch.optim.Adam(weight_decay=...)``: norms, biases, position
        embedding, class token and symbols included); tensors of 2 or more dimensions under
        ``"weights_only"`` (timm's rule, what runs trained before)."""
        return True if self.decay_scheme == "reference" else p.ndim >= 2

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C], each patch flattened in (p1 p2 c) order."""
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.patchify(x))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x, self.symbols(x) if self.symbols is not None else None)  # symbols from the current x
        x = x[:, 0] if self.pool == "cls" else x.mean(dim=1)
        return self.head(self.norm(x))

    def token_grid(self) -> tuple[int, int, int]:
        """For probes (``attention.TokenGrid``): the patch grid (rows, cols) and the tokens before it
        (the class token)."""
        return self.grid, self.grid, 1


# --- the reference's parameter names ---------------------------------------------------------

def reference_key_map(model: DualAttentionTransformer) -> dict[str, tuple[str, ...]]:
    """Each key of ``model.state_dict()`` -> the keys of the reference model's state dict whose
    tensors, concatenated along dim 0, make it (fused projections: our ``qkv`` is the reference's
    ``wq``, ``wk``, ``wv``; our ``proj`` its ``wq_attn``, ``wk_attn``, ``wq_rel``, ``wk_rel``).

    Names are those of Awni00/abstract_transformer (b7da583, the same at 141000e, from which the
    paper's CIFAR runs were launched): ``vision_models.VisionTransformer`` for ``ra = 0``,
    ``VisionDualAttnTransformer`` otherwise (for rca / disrca, the names its modules have; its
    CIFAR script cannot build them).
    Under ``symmetric_rels`` the reference's ``wk_rel`` is the ``wq_rel`` module, so its state dict
    holds the same tensor under both names; only ``wq_rel`` is mapped. (The PyPI package
    Awni00/dual-attention has no final LayerNorm, ``final_out`` being the bare head: its vision
    models do not map onto this one.)"""
    m: dict[str, tuple[str, ...]] = {"cls_token": ("cls_token",), "pos_embed": ("pos_embedding",)}

    def linear(ours: str, ref: str, module: nn.Module) -> None:
        m[f"{ours}.weight"] = (f"{ref}.weight",)
        if getattr(module, "bias", None) is not None:
            m[f"{ours}.bias"] = (f"{ref}.bias",)

    for i in range(3):  # LayerNorm, Linear, LayerNorm after the (parameter-free) Rearrange
        linear(f"patch_embed.{i}", f"to_patch_embedding.{i + 1}", model.patch_embed[i])
    sym = model.symbols
    if isinstance(sym, PositionalSymbols):
        m["symbols.symbols"] = ("symbol_retriever.symbol_library.weight",)
    elif isinstance(sym, PositionRelativeSymbols):
        m["symbols.table"] = ("symbol_retriever.rel_pos_enc.rel_pos_embeddings",)
    elif isinstance(sym, SymbolicAttention):
        linear("symbols.query", "symbol_retriever.q_proj", sym.query)
        m["symbols.templates"] = ("symbol_retriever.template_features",)
        m["symbols.library"] = ("symbol_retriever.symbol_library",)
    for layer, block in enumerate(model.blocks):
        ours, ref = f"blocks.{layer}", f"encoder_blocks.{layer}"
        linear(f"{ours}.norm1", f"{ref}.norm1", block.norm1)
        linear(f"{ours}.norm2", f"{ref}.norm2", block.norm2)
        linear(f"{ours}.mlp.0", f"{ref}.ff_block.linear1", block.mlp[0])
        linear(f"{ours}.mlp.2", f"{ref}.ff_block.linear2", block.mlp[2])
        sa, ra = block.attn.self_attn, block.attn.rel_attn
        if sa is not None:
            r = f"{ref}.self_attn" if model.vit else f"{ref}.dual_attn.self_attention"
            m[f"{ours}.attn.self_attn.qkv.weight"] = (f"{r}.wq.weight", f"{r}.wk.weight", f"{r}.wv.weight")
            linear(f"{ours}.attn.self_attn.wo", f"{r}.wo", sa.wo)
        if ra is not None:
            r, o = f"{ref}.dual_attn.relational_attention", f"{ours}.attn.rel_attn"
            if isinstance(ra, RelationalCrossAttention):
                names = ["wq", "wk"]
            else:
                names = ["wq_attn", "wk_attn", "wq_rel"] + ([] if ra.symmetric else ["wk_rel"])
            m[f"{o}.proj.weight"] = tuple(f"{r}.{n}.weight" for n in names)
            if isinstance(ra, RelationalAttention):
                m[f"{o}.wr"] = (f"{r}.wr",)
            linear(f"{o}.wv", f"{r}.wv", ra.wv)
            linear(f"{o}.wo", f"{r}.wo", ra.wo)
    linear("norm", "final_out.0", model.norm)
    linear("head", "final_out.1", model.head)
    return m


def load_reference_state_dict(model: DualAttentionTransformer, state_dict: dict[str, torch.Tensor], *,
                              prefix: str = "") -> None:
    """Load the weights of a reference model (``reference_key_map``) into ``model``, which must
    have been built with the same configuration. ``prefix``: what precedes the reference's names,
    e.g. ``"model."`` in a Lightning checkpoint of its CIFAR script. Every tensor must be used:
    a leftover reference key, or a tied ``wk_rel`` that differs from ``wq_rel``, is an error."""
    ref = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    used, ours = set(), {}
    for key, names in reference_key_map(model).items():
        missing = [n for n in names if n not in ref]
        if missing:
            raise KeyError(f"reference state dict lacks {prefix}{missing[0]} (for {key})")
        ours[key] = torch.cat([ref[n] for n in names], dim=0) if len(names) > 1 else ref[names[0]]
        used.update(names)
    for name in set(ref) - used:  # the tied relation keys of symmetric_rels
        tied = name.replace(".wk_rel.", ".wq_rel.")
        if name.endswith(".wk_rel.weight") and tied in used:
            if not torch.equal(ref[name], ref[tied]):
                raise ValueError(f"{prefix}{name} differs from {prefix}{tied}, but symmetric_rels ties them")
            used.add(name)
    extra = sorted(set(ref) - used)
    if extra:
        raise KeyError(f"reference keys this model has no place for (another configuration?): {extra[:5]}")
    model.load_state_dict(ours, strict=True)


def build(hp: DualAttentionHparams, *, num_classes: int, in_chans: int, img_size: int) -> DualAttentionTransformer:
    return DualAttentionTransformer(hp, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
