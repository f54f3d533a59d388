"""Vision Transformer: "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021),
https://arxiv.org/abs/2010.11929.

Patch embedding by a strided convolution, a learned class token and learned
absolute positions, pre-norm blocks (or post-norm with ``norm_first = false``)
whose attention runs through ``scaled_dot_product_attention`` (flash/efficient
kernels on GPUs), a final norm and a linear head on the class token (or the mean
of all tokens). With the defaults (``pool = "cls"``) it is timm's ``VisionTransformer``
(timm 1.0.31, ``vision_transformer.py``) parameter for parameter and function for function:
LayerNorm eps 1e-6, exact GELU, biases on qkv and the output projection, timm's init
(linear weights trunc-normal(0.02) with zero biases, position embedding trunc-normal(0.02),
class token N(0, 1e-6), the patch convolution and norms at PyTorch's defaults).
``from_timm_state_dict`` maps a timm state dict onto this model (tested to float64 precision).
``pool = "mean"`` averages every token, the class token included, after the final norm;
timm's ``global_pool = "avg"`` leaves the class token out and normalizes after pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import activation, trunc_normal_init
from . import ViTHparams


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """For probes (``attention.GlobalAttention``): the softmax weights SDPA applies, [B, heads, N, N]
        (SDPA never materializes them)."""
        b, n, d = x.shape
        q, k, _ = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return torch.softmax((q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5, dim=-1)


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x)). Post-norm: norm(x + attn(x)), ..."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, act: str, norm_first: bool, eps: float):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), activation(act), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class VisionTransformer(nn.Module):
    def __init__(self, hp: ViTHparams, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        self.pool = hp.pool
        self.grid = img_size // hp.patch_size
        self.patch_embed = nn.Conv2d(in_chans, hp.dim, kernel_size=hp.patch_size, stride=hp.patch_size)
        num_patches = (img_size // hp.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hp.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, hp.dim))
        self.pos_drop = nn.Dropout(hp.dropout)
        self.blocks = nn.Sequential(*[Block(hp.dim, hp.heads, hp.hidden(), hp.dropout, hp.activation, hp.norm_first,
                                            hp.norm_eps) for _ in range(hp.depth)])
        # post-norm blocks end normalized
        self.norm = nn.LayerNorm(hp.dim, eps=hp.norm_eps) if hp.norm_first else nn.Identity()
        self.head = nn.Linear(hp.dim, num_classes)
        self.apply(trunc_normal_init)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if hp.init_scheme == "reference":
            nn.init.normal_(self.cls_token, std=1e-6)
        else:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, dim]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(self.pos_drop(x)))
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))

    def token_grid(self) -> tuple[int, int, int]:
        """For probes (``attention.TokenGrid``): the patch grid (rows, cols) and the tokens before it
        (the class token)."""
        return self.grid, self.grid, 1


def from_timm_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``VisionTransformer`` state dict (class token, ``global_pool = "token"``, no
    register tokens) renamed for this model: ``patch_embed.proj.*`` -> ``patch_embed.*`` and
    ``mlp.fc1/fc2`` -> ``mlp.0/3``; every other name is the same."""
    renames = {"patch_embed.proj.": "patch_embed.", "mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}
    out = {}
    for name, value in state.items():
        for old, new in renames.items():
            name = name.replace(old, new)
        out[name] = value
    return out


def build(hp: ViTHparams, *, num_classes: int, in_chans: int, img_size: int) -> VisionTransformer:
    return VisionTransformer(hp, num_classes=num_classes, in_chans=hp.in_chans or in_chans, img_size=img_size)
