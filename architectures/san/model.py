"""Self-attention networks (SAN): "Exploring Self-attention for Image Recognition"
(Zhao, Jia, Koltun, CVPR 2020), https://arxiv.org/abs/2004.13621, reference code
https://github.com/hszhao/SAN, matched at commit d88b022fc3ec4920d4596f94983f0e5b1ced62c6
(2020-06-15, its latest): ``model/san.py`` (layers, blocks, network), ``lib/sa/functions``
(the CUDA kernels ``subtraction_refpad``, ``subtraction2_refpad``, ``aggregation_refpad``)
and ``tool/train.py`` (initialization, weight decay).

A SAN layer aggregates a k x k footprint R(i) around every pixel i with vector
attention weights, ``y_i = sum_{j in R(i)} alpha_j (.) beta(x_j)``:

* ``beta`` is a 1x1 conv (with bias) from C to mid = C/4 channels;
* the weights have mid/8 channels, shared across the 8 channel groups (output
  channel c uses weight channel c mod mid/8), as the reference's aggregation kernel; widths
  that are multiples of 16 but not of 32 (single modules in tests; the paper's widths and
  ``SANHparams.check`` ask for multiples of 32) have mid/8 fractional and use 4 groups of
  mid/4 weight channels;
* the footprint is padded by reflection (the reference's ``pad_mode = 1``: index -i before
  the map, 2(n-1)-i past it), positions in row-major order (kh * k + kw), stride 1; where the
  feature map is not larger than the padding (tiny maps the reference's kernels do not
  handle) the reflection repeats.

Pairwise (``sa_type = 0`` in the reference): ``alpha_j = softmax_j gamma([delta(x_i, x_j),
p_i - p_j])`` with ``phi``/``psi`` 1x1 convs (with bias) to C/16 channels, the relation ``delta``
one of subtraction ``phi(x_i) - psi(x_j)`` (the paper's and the reference's choice),
summation, concatenation, Hadamard product or dot product, ``p`` a 1x1 conv of the (x, y)
coordinates (x along the width first), each normalized to [-1, 1] by ``linspace``, and
``gamma`` = BN, ReLU, 1x1 conv -> C/16 (no bias), BN, ReLU, 1x1 conv -> mid/8, softmax over the
k^2 positions. BatchNorm statistics are taken over batch, footprint and pixels, as the
reference's ``[B, C, k*k, H*W]`` layout.

Patchwise (``sa_type = 1``): ``alpha = gamma(delta(x_R(i)))`` holds the weights of all k^2
positions at once: gamma = BN, ReLU, 1x1 conv -> mid/8 (no bias), BN, ReLU, 1x1 conv (with bias)
-> k^2 * mid/8, read as [mid/8, k^2] (weight channel major), no softmax (as the reference). The
relation is one of the paper's three:

* concatenation ``[phi(x_i), psi(x_j) for j in R(i)]`` (C/16 * (k^2 + 1) channels, the psi part
  channel-major as ``nn.Unfold`` of the reflection-padded map; the paper's and reference's choice);
* star-product ``[phi(x_i)^T psi(x_j) for j in R(i)]`` (k^2 scalars);
* clique-product ``[phi(x_j)^T psi(x_k) for j, k in R(i)]`` (k^4 scalars; memory grows as k^4
  per pixel: 2401 channels per pixel with a 7x7 footprint).

The reference implements only subtraction (pairwise) and concatenation (patchwise); the
others follow the paper's definitions with the same phi/psi/gamma shapes. Position
encodings enter the pairwise form only (as the reference): in the patchwise form the slot of
a neighbour in delta already tells where it is.

Block (pre-activation bottleneck): BN, ReLU, SA (C -> mid), BN, ReLU, 1x1 conv mid -> C (with
bias), plus identity. Network: 1x1 stem conv (no bias) to ``stem_width`` + BN + ReLU; five
stages, each an optional 2x2 max-pool, a 1x1 transition conv (no bias), its blocks, BN, ReLU;
global average pool and a linear head. At 224 px and 1000 classes, the paper's sizes:
SAN10/15/19 pairwise 10,531,592 / 14,065,048 / 17,595,640 parameters (10.5 / 14.1 / 17.6 M;
the reference has 2 + mid/8 more per block, 10,531,848 / 14,065,436 / 17,596,156: the dead
biases noted in ``PairwiseSA``), patchwise 11,841,124 / 16,181,310 / 20,518,470 (11.8 / 16.2 /
20.5 M, as the reference).

Initialization is PyTorch's default for every layer (convs and the head kaiming-uniform with
a = sqrt(5), BN weight 1 and bias 0), as the reference: neither ``model/san.py`` nor
``tool/train.py`` initializes anything (``util.init_weights`` exists there but is never
called). Weight decay (``decay_scheme = "reference"``, ``SAN.decayed``) applies to every
parameter, as the reference's ``torch.optim.SGD(model.parameters(), weight_decay=1e-4)``.

Deliberate departures from the reference:

* ``pools``: the reference always pools five times (224 px -> 7 x 7); by default fewer pools
  on small images (``san_pools``), the earliest stages skipping theirs, so small images keep
  their resolution early (5 at 224 px, 3 at 32 px);
* the pairwise form leaves out the reference's two dead biases per block (the position conv's,
  cancelled by p_i - p_j, and gamma's last conv's, cancelled by the softmax over the
  footprint); ``load_reference_state_dict`` drops them from a reference checkpoint;
* ``stem_width``, ``widths``, ``kernels`` and the relations other than subtraction and
  concatenation are options beyond the reference (its defaults are the reference's);
* reflection repeats on maps not larger than the padding (see above).

``load_reference_state_dict`` loads a reference checkpoint (``state_dict`` of ``model/san.py``'s
``SAN``, or of one ``SAM`` into a ``PairwiseSA`` / ``PatchwiseSA``) through
``reference_key_map``: ``conv_in``/``bn_in`` -> ``stem.0``/``stem.1``; ``conv{s}``, ``layer{s}.{i}``,
``bn{s}`` -> stage s's transition conv, i-th block and final BN; ``fc`` -> ``head``; in a block
``sam.conv1``/``conv2``/``conv3``/``conv_w``/``conv_p`` -> ``sa.phi``/``psi``/``beta``/``gamma``/``pos``.

Everything is pure PyTorch (``unfold`` gathers the windows), so it runs on CPU and GPU; the
reference's custom CUDA kernels are not needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import SANHparams, SANPairwiseHparams, SANPatchwiseHparams, san_pools

LAYOUTS = {"san10": [2, 1, 2, 4, 1], "san15": [3, 2, 3, 5, 2], "san19": [3, 3, 4, 6, 3]}
SHARE = 8  # channel groups sharing one weight vector: weights have mid / SHARE channels


def weight_channels(mid: int) -> int:
    """mid / 8 as the reference (networks: widths are multiples of 32); a single module built with
    another mid shares its weights over gcd(mid, 8) groups instead."""
    return mid // math.gcd(mid, SHARE)


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflection-padded axis of length n (edge not repeated, as ReflectionPad2d);
    the reflection repeats when pad >= n, and a length-1 axis repeats its only entry."""
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx < n, idx, period - idx)


def windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, k*k, H*W]: the reflection-padded k x k footprint of every pixel,
    positions in row-major order (kh * k + kw)."""
    b, c, h, w = x.shape
    pad = k // 2
    if pad == 0:
        return x.reshape(b, c, 1, h * w)
    if pad < h and pad < w:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    else:
        x = x.index_select(2, _reflect_index(h, pad, x.device)).index_select(3, _reflect_index(w, pad, x.device))
    return F.unfold(x, k).view(b, c, k * k, h * w)


def aggregate(v: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """y_i = sum_j w_j (.) v_j over the footprint, weight channel c mod w.shape[1] for channel c.
    v: [B, C, H, W]; w: [B, Cw, k*k, H*W] -> [B, C, H, W]."""
    b, c, h, wd = v.shape
    cw = w.shape[1]
    vj = windows(v, k).view(b, c // cw, cw, k * k, h * wd)
    return (vj * w.unsqueeze(1)).sum(3).view(b, c, h, wd)


def key_pixels(h: int, w: int, k: int, device: torch.device) -> torch.Tensor:
    """[k*k, H*W]: the pixel (row-major index) at each footprint position of every pixel."""
    index = torch.arange(h * w, device=device, dtype=torch.float32).view(1, 1, h, w)
    return windows(index, k)[0, 0].round().long()


def position(h: int, wd: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, 2, H, W]: (x, y) coordinates normalized to [-1, 1]."""
    xs = torch.linspace(-1.0, 1.0, wd, device=device, dtype=dtype).view(1, wd).expand(h, wd)
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype).view(h, 1).expand(h, wd)
    return torch.stack([xs, ys]).unsqueeze(0)


class PairwiseSA(nn.Module):
    """Pairwise vector self-attention: C -> mid channels."""

    window_normalized = True  # softmax over the footprint (for probes: ``attention.WindowAttention``)

    def __init__(self, channels: int, rel: int, mid: int, kernel: int, relation: str = "subtraction"):
        super().__init__()
        self.kernel, self.relation = kernel, relation
        self.phi = nn.Conv2d(channels, rel, 1)
        self.psi = nn.Conv2d(channels, rel, 1)
        self.beta = nn.Conv2d(channels, mid, 1)
        # The reference gives the position conv and gamma's last conv biases; both are dead
        # (p_i - p_j cancels the first, the softmax over the footprint the second): left out.
        self.pos = nn.Conv2d(2, 2, 1, bias=False)
        d = {"subtraction": rel, "summation": rel, "hadamard": rel, "concatenation": 2 * rel, "dot": 1}[relation]
        self.gamma = nn.Sequential(
            nn.BatchNorm2d(d + 2), nn.ReLU(inplace=True), nn.Conv2d(d + 2, rel, 1, bias=False),
            nn.BatchNorm2d(rel), nn.ReLU(inplace=True), nn.Conv2d(rel, weight_channels(mid), 1, bias=False))

    def relate(self, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
        """xi [B, r, 1, L], xj [B, r, k*k, L] -> delta [B, d, k*k, L]."""
        if self.relation == "subtraction":
            return xi - xj
        if self.relation == "summation":
            return xi + xj
        if self.relation == "hadamard":
            return xi * xj
        if self.relation == "dot":
            return (xi * xj).sum(1, keepdim=True)
        return torch.cat([xi.expand_as(xj), xj], 1)  # concatenation

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights [B, mid/8, k*k, H*W], softmax over the footprint."""
        b, _, h, wd = x.shape
        k = self.kernel
        xi = self.phi(x).flatten(2).unsqueeze(2)
        xj = windows(self.psi(x), k)
        p = self.pos(position(h, wd, x.device, x.dtype))
        dp = p.flatten(2).unsqueeze(2) - windows(p, k)  # p_i - p_j, [1, 2, k*k, L]
        rel = torch.cat([self.relate(xi, xj), dp.expand(b, -1, -1, -1)], 1)
        return self.gamma(rel).softmax(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aggregate(self.beta(x), self.weights(x), self.kernel)

    def window_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For probes (``attention.WindowAttention``): the weights [B, mid/8, k*k, H*W] and the key pixel
        of each footprint position [k*k, H*W] (row-major index; reflection padding repeats pixels at the border)."""
        return self.weights(x), key_pixels(x.shape[-2], x.shape[-1], self.kernel, x.device)


class PatchwiseSA(nn.Module):
    """Patchwise vector self-attention: C -> mid channels."""

    window_normalized = False  # no softmax, as the reference (for probes: ``attention.WindowAttention``)

    def __init__(self, channels: int, rel: int, mid: int, kernel: int, relation: str = "concatenation"):
        super().__init__()
        self.kernel, self.relation = kernel, relation
        k2, cw = kernel * kernel, weight_channels(mid)
        self.phi = nn.Conv2d(channels, rel, 1)
        self.psi = nn.Conv2d(channels, rel, 1)
        self.beta = nn.Conv2d(channels, mid, 1)
        d = {"concatenation": rel * (k2 + 1), "star": k2, "clique": k2 * k2}[relation]
        self.gamma = nn.Sequential(
            nn.BatchNorm2d(d), nn.ReLU(inplace=True), nn.Conv2d(d, cw, 1, bias=False),
            nn.BatchNorm2d(cw), nn.ReLU(inplace=True), nn.Conv2d(cw, k2 * cw, 1))

    def relate(self, x: torch.Tensor) -> torch.Tensor:
        """delta(x_R(i)) for every pixel: [B, d, 1, H*W]."""
        b, _, h, wd = x.shape
        k = self.kernel
        if self.relation == "clique":
            xj, xk = windows(self.phi(x), k), windows(self.psi(x), k)  # [B, r, k*k, L]
            return torch.einsum("bcjl,bckl->bjkl", xj, xk).reshape(b, -1, 1, h * wd)
        xi = self.phi(x).flatten(2).unsqueeze(2)  # [B, r, 1, L]
        xj = windows(self.psi(x), k)
        if self.relation == "star":
            return (xi * xj).sum(1).unsqueeze(2)
        return torch.cat([xi, xj.flatten(1, 2).unsqueeze(2)], 1)  # concatenation, channel-major

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights [B, mid/8, k*k, H*W] (no softmax, as the reference)."""
        b, _, h, wd = x.shape
        return self.gamma(self.relate(x)).view(b, -1, self.kernel * self.kernel, h * wd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aggregate(self.beta(x), self.weights(x), self.kernel)

    def window_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For probes (``attention.WindowAttention``): the weights [B, mid/8, k*k, H*W] and the key pixel
        of each footprint position [k*k, H*W] (row-major index; reflection padding repeats pixels at the border)."""
        return self.weights(x), key_pixels(x.shape[-2], x.shape[-1], self.kernel, x.device)


class Bottleneck(nn.Module):
    """Pre-activation: x + conv(relu(bn2(SA(relu(bn1(x))))))."""

    def __init__(self, sa: type[nn.Module], channels: int, kernel: int, relation: str):
        super().__init__()
        mid = channels // 4
        self.bn1 = nn.BatchNorm2d(channels)
        self.sa = sa(channels, channels // 16, mid, kernel, relation)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sa(F.relu(self.bn1(x)))
        return x + self.conv(F.relu(self.bn2(out)))


class SAN(nn.Module):
    def __init__(self, sa: type[nn.Module], hp: SANHparams, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        if any(w % 16 for w in hp.widths):  # as hp.check: C/16 relation channels, mid = C/4
            raise ValueError(f"SAN widths must be multiples of 16, got {hp.widths}")
        pools = hp.pools if hp.pools is not None else san_pools(img_size)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, hp.stem_width, 1, bias=False),
                                  nn.BatchNorm2d(hp.stem_width), nn.ReLU(inplace=True))
        stages, cin = [], hp.stem_width
        for s, (n, k, c) in enumerate(zip(LAYOUTS[hp.layout], hp.kernels, hp.widths)):
            pool = [nn.MaxPool2d(2, 2)] if s >= 5 - pools else []  # the last `pools` stages pool
            blocks = [Bottleneck(sa, c, k, hp.relation) for _ in range(n)]
            stages.append(nn.Sequential(*pool, nn.Conv2d(cin, c, 1, bias=False), *blocks,
                                        nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
            cin = c
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)
        self.decay_scheme = hp.decay_scheme

    def decayed(self, name: str, p: nn.Parameter) -> bool:
        """Whether weight decay applies (``runner.train.optim``): every parameter under ``reference``
        (hszhao/SAN decays ``model.parameters()``), weights only (ndim >= 2) under ``weights_only``."""
        return self.decay_scheme == "reference" or p.ndim >= 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_pairwise(hp: SANPairwiseHparams, *, num_classes: int, in_chans: int, img_size: int) -> SAN:
    return SAN(PairwiseSA, hp, num_classes=num_classes, in_chans=in_chans, img_size=img_size)


def build_patchwise(hp: SANPatchwiseHparams, *, num_classes: int, in_chans: int, img_size: int) -> SAN:
    return SAN(PatchwiseSA, hp, num_classes=num_classes, in_chans=in_chans, img_size=img_size)


# ---------------------------------------------------------------- reference checkpoints

_SA_NAMES = {"phi": "conv1", "psi": "conv2", "beta": "conv3", "gamma": "conv_w", "pos": "conv_p"}
_REFERENCE_RELATIONS = {PairwiseSA: "subtraction", PatchwiseSA: "concatenation"}


def _sa_prefixes(ours: str, ref: str, sa: nn.Module) -> dict[str, str]:
    out = {}
    for name, _ in sa.named_modules():
        if name:
            head, _, rest = name.partition(".")
            out[ours + name] = ref + ".".join(filter(None, [_SA_NAMES[head], rest]))
    return out


def _module_prefixes(model: nn.Module) -> dict[str, str]:
    """Our module names -> the reference's (``model/san.py``)."""
    if isinstance(model, (PairwiseSA, PatchwiseSA)):
        return _sa_prefixes("", "", model)
    out = {"stem.0": "conv_in", "stem.1": "bn_in", "head": "fc"}
    for s, stage in enumerate(model.stages):
        blocks = 0
        for i, m in enumerate(stage):
            ours = f"stages.{s}.{i}"
            if isinstance(m, Bottleneck):
                ref = f"layer{s}.{blocks}"
                out.update({f"{ours}.{n}": f"{ref}.{n}" for n in ("bn1", "bn2", "conv")})
                out.update(_sa_prefixes(f"{ours}.sa.", f"{ref}.sam.", m.sa))
                blocks += 1
            elif isinstance(m, nn.Conv2d):
                out[ours] = f"conv{s}"
            elif isinstance(m, nn.BatchNorm2d):
                out[ours] = f"bn{s}"
    return out


def reference_key_map(model: nn.Module) -> dict[str, str]:
    """Reference state-dict key -> ours, for every entry of ``model.state_dict()`` (parameters and
    BatchNorm buffers). ``model``: a ``SAN``, or a single ``PairwiseSA`` / ``PatchwiseSA`` (keys of
    the reference's ``SAM``). The reference's keys without a counterpart are ``reference_dead_keys``."""
    prefixes = _module_prefixes(model)
    out = {}
    for name, module in model.named_modules():
        tensors = [n for n, _ in module.named_parameters(recurse=False)]
        tensors += [n for n, b in module.named_buffers(recurse=False) if b is not None]
        for leaf in tensors:
            out[f"{prefixes[name]}.{leaf}"] = f"{name}.{leaf}"
    return out


def reference_dead_keys(model: nn.Module) -> list[str]:
    """The reference's parameters left out here: in each pairwise layer, the position conv's bias
    (cancelled by p_i - p_j) and gamma's last bias (cancelled by the softmax over the footprint)."""
    prefixes = _module_prefixes(model)
    if isinstance(model, PairwiseSA):
        return ["conv_p.bias", "conv_w.5.bias"]
    out = []
    for name, m in model.named_modules():
        if isinstance(m, PairwiseSA):
            ref = prefixes[name + ".phi"].removesuffix("conv1")
            out += [ref + "conv_p.bias", ref + "conv_w.5.bias"]
    return out


def load_reference_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a hszhao/SAN checkpoint's ``state_dict`` (its ``SAN``, or one ``SAM`` into a single layer)
    through ``reference_key_map``; a ``module.`` prefix (DataParallel / DDP, as ``tool/train.py``
    saves) is stripped. Every reference key must be used or be one of ``reference_dead_keys``, and
    every entry of ours must be given; shapes must agree (the reference has the subtraction and
    concatenation relations only). Returns the dead keys dropped."""
    for m in model.modules():
        rel = _REFERENCE_RELATIONS.get(type(m))
        if rel is not None and m.relation != rel:
            raise ValueError(f"the reference has only the {rel!r} relation for {type(m).__name__}, not {m.relation!r}")
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    mapping, dead = reference_key_map(model), set(reference_dead_keys(model))
    missing = sorted(k for k in mapping if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in mapping and k not in dead)
    if missing or unexpected:
        raise KeyError(f"reference state dict does not fit: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                       f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    model.load_state_dict({ours: state_dict[ref] for ref, ours in mapping.items()}, strict=True)
    return sorted(dead & state_dict.keys())
