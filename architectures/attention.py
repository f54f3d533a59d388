"""Where a trained model's attention looks: the rows a probe draws, from any attention family.

A model's attention layers are found by what they can tell, stated by the protocols below
(a family implements them by having the methods; nothing to inherit):

* global attention (ViT, dual attention, conv-equivalent attention): each layer is a
  ``GlobalAttention`` (``attention_probs``, the softmax weights ``[B, heads, N, N]``) and the
  model a ``TokenGrid`` (``token_grid()``: the token grid (rows, cols) and how many tokens
  precede it, a class token);
* local attention (SAN): each layer is a ``WindowAttention`` (``window_probs``: weights over
  each pixel's k x k footprint and the key pixel of every footprint position); its grid is
  the feature map it sees;
* timm's vision transformers are read from the weights entering their ``attn_drop`` (with their
  fused kernel switched off while the probe runs).

A forward pre-hook on each layer recomputes its weights from the layer's own input during one
forward pass and keeps two rows per head, never the whole N x N matrix (SAN at 224 px would
need gigabytes): the attention of one query token over all keys, and the mean over the grid's
queries of their attention over all keys; and the mean attention distance (Dosovitskiy et al.,
Fig. 7): for each grid query the attention-weighted distance, in image pixels, to the grid keys
(a class token's weight left out, the rest renormalized), averaged over queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class GlobalAttention(Protocol):
    """An attention layer over all N tokens whose weights a probe can have recomputed."""

    def attention_probs(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Called with the layer's own forward inputs (tokens ``x`` [B, N, d] first): the
        attention weights ``[B, heads, N, N]`` the forward applies, each row summing to 1."""
        ...


@runtime_checkable
class TokenGrid(Protocol):
    """A model whose ``GlobalAttention`` tokens lie on a grid of the image."""

    def token_grid(self) -> tuple[int, int, int]:
        """``(rows, cols, prefix)``: the token grid, row-major, and the tokens before it
        (1 for a class token, 0 without); N = prefix + rows * cols."""
        ...


@runtime_checkable
class WindowAttention(Protocol):
    """A local attention layer: every pixel of its [B, C, H, W] input attends to a k x k footprint."""

    window_normalized: bool  # the weights over a footprint sum to 1 (a softmax)

    def window_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the layer's input ``x`` [B, C, H, W]: the weights ``[B, heads, k*k, H*W]`` (query
        pixels last, row-major) and the key pixel of every footprint position ``[k*k, H*W]``
        (a row-major index into the same H x W map)."""
        ...


@runtime_checkable
class GaussianHeads(Protocol):
    """A model with quadratic (Gaussian) positional attention (Cordonnier et al.)."""

    def gaussian_heads(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per quadratic layer: the centres ``[H, 2]`` (row, col offsets in grid pixels) and the
        inverse covariances ``[H, 2, 2]``, detached."""
        ...


@dataclass(frozen=True)
class AttentionRows:
    layer: str  # the module's name in the model, e.g. "blocks.2.attn"
    grid: tuple[int, int]  # the token grid the keys lie on (rows, cols)
    prefix: int  # tokens before the grid (a class token), first among the keys
    query_index: int  # the query token of ``query``
    query: torch.Tensor  # [B, heads, prefix + rows*cols]: the query token's attention over the keys
    mean: torch.Tensor  # [B, heads, prefix + rows*cols]: the mean over the grid's queries
    distance: torch.Tensor  # [B, heads]: mean attention distance in image pixels (over grid queries and keys)
    normalized: bool  # rows sum to 1 (softmax); SAN's patchwise weights are not normalized


class NoAttention(ValueError):
    """The model has no attention layer a probe can read (a CNN, or a timm model of another kind)."""


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose attention can be read, in forward order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (GlobalAttention, WindowAttention)) or _is_timm_attention(m)]


def _is_timm_attention(m: nn.Module) -> bool:
    return hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module) and hasattr(m, "num_heads")


def query_token(query: str | tuple[int, int], grid: tuple[int, int], prefix: int, img_size: int) -> int:
    """The token of a query: ``"cls"`` (the class token), ``"center"``, or an image pixel (row, col),
    mapped onto the layer's grid."""
    if query == "cls":
        if prefix == 0:
            raise NoAttention("query = \"cls\": this model has no class token; use \"center\" or [row, col]")
        return 0
    row, col = (img_size // 2, img_size // 2) if query == "center" else query
    if not (0 <= row < img_size and 0 <= col < img_size):
        raise NoAttention(f"query = [{row}, {col}]: outside the {img_size}x{img_size} image")
    r, c = row * grid[0] // img_size, col * grid[1] // img_size
    return prefix + r * grid[1] + c


@torch.no_grad()
def attention_rows(model: nn.Module, x: torch.Tensor, query: str | tuple[int, int] = "center") -> list[AttentionRows]:
    """Run ``x`` [B, C, H, W] through the eval-mode ``model`` once; per attention layer, the rows of
    ``query`` and the mean over queries. Raises ``NoAttention`` when there is nothing to read."""
    layers = attention_layers(model)
    if not layers:
        raise NoAttention(f"{type(model).__name__} has no attention layer to read")
    img_size = x.shape[-1]
    out: list[AttentionRows] = []
    hooks, restore = [], []

    def keep_global(name: str, probs: torch.Tensor, grid: tuple[int, int], prefix: int) -> None:
        q = query_token(query, grid, prefix, img_size)
        probs = probs.float()
        grid_rows = probs[:, :, prefix:, :]
        within = grid_rows[..., prefix:]
        within = within / within.sum(-1, keepdim=True).clamp_min(1e-12)
        distance = (within * pixel_distances(grid, img_size, probs.device)).sum(-1).mean(-1)
        out.append(AttentionRows(name, grid, prefix, q, probs[:, :, q, :].cpu(), grid_rows.mean(2).cpu(),
                                 distance.cpu(), True))

    for name, m in layers:
        if isinstance(m, WindowAttention):
            def pre(module, args, name=name):
                weights, keys = module.window_probs(args[0])
                h, w = args[0].shape[-2:]
                out.append(_window_rows(name, weights, keys, (h, w), query_token(query, (h, w), 0, img_size),
                                        img_size, normalized=module.window_normalized))
            hooks.append(m.register_forward_pre_hook(pre))
        elif isinstance(m, GlobalAttention):
            if not isinstance(model, TokenGrid):
                raise NoAttention(f"{type(model).__name__} does not say its token grid (token_grid())")
            rows, cols, prefix = model.token_grid()

            def pre(module, args, name=name, grid=(rows, cols), prefix=prefix):
                keep_global(name, module.attention_probs(*args), grid, prefix)
            hooks.append(m.register_forward_pre_hook(pre))
        else:  # timm: the weights are the input of attn_drop once the fused kernel is off
            gh, gw = model.patch_embed.grid_size
            prefix = getattr(model, "num_prefix_tokens", 1)
            restore.append((m, m.fused_attn))
            m.fused_attn = False

            def pre(module, args, name=name, grid=(gh, gw), prefix=prefix):
                keep_global(name, args[0], grid, prefix)
            hooks.append(m.attn_drop.register_forward_pre_hook(pre))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, fused in restore:
            m.fused_attn = fused
    return out


def pixel_distances(grid: tuple[int, int], img_size: int, device=None) -> torch.Tensor:
    """[N, N]: the distance in image pixels between the centres of any two cells of the grid."""
    rows, cols = torch.meshgrid(torch.arange(grid[0], device=device), torch.arange(grid[1], device=device),
                                indexing="ij")
    pos = torch.stack([rows.flatten() * (img_size / grid[0]), cols.flatten() * (img_size / grid[1])], -1).float()
    return torch.cdist(pos, pos)


def _window_rows(name: str, weights: torch.Tensor, keys: torch.Tensor, grid: tuple[int, int], q: int,
                 img_size: int, normalized: bool) -> AttentionRows:
    """Local attention as rows over the whole grid: each footprint weight added at its key pixel
    (a border pixel reflected twice into one footprint gets both weights). Unnormalized weights
    (patchwise) are weighed by magnitude for the distance."""
    b, heads, k2, n = weights.shape
    weights = weights.float()
    query = torch.zeros(b, heads, n, device=weights.device).index_add_(2, keys[:, q], weights[:, :, :, q])
    mean = torch.zeros(b, heads, n, device=weights.device).index_add_(2, keys.reshape(-1), weights.reshape(b, heads, -1))
    d = pixel_distances(grid, img_size, weights.device).gather(0, keys.t()).t()  # [k*k, N]: query i to its key
    w = weights.abs()
    distance = ((w * d).sum(2) / w.sum(2).clamp_min(1e-12)).mean(-1)
    return AttentionRows(name, grid, 0, q, query.cpu(), (mean / n).cpu(), distance.cpu(), normalized)


def gaussian_heads(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer, the learned centres [H, 2] and inverse covariances [H, 2, 2] of a quadratic-encoding
    model (Cordonnier et al.'s figure); None for any other model."""
    found = model.gaussian_heads() if isinstance(model, GaussianHeads) else []
    return found or None
