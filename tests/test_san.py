"""SAN (Zhao, Jia, Koltun 2020): shapes at the study's geometries, gradients, seeding, the
paper's parameter counts, and the attention equations against direct loops over pixels."""

from __future__ import annotations

import pytest
import torch

import architectures
from architectures.san import model as san
from architectures.san import san_pools

PAIRWISE = ["subtraction", "summation", "concatenation", "hadamard", "dot"]
PATCHWISE = ["concatenation", "star", "clique"]
VARIANTS = [("san_pairwise", r) for r in PAIRWISE] + [("san_patchwise", r) for r in PATCHWISE]
GEOMETRIES = [(1, 8), (1, 28), (3, 32), (3, 64)]
SMALL = {"widths": [32, 32, 64, 64, 64], "stem_width": 16}


def build(name, relation, in_chans=3, img=32, seed=0, num_classes=10, **hp):
    torch.manual_seed(seed)
    return architectures.create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img,
                                      relation=relation, **{**SMALL, **hp})


def stage_sizes(model, x):
    """Spatial size seen by each stage's blocks."""
    sizes = []
    hooks = [s.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:]))) for s in model.stages]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, sizes


@pytest.mark.parametrize("name,relation", VARIANTS)
@pytest.mark.parametrize("in_chans,img", GEOMETRIES, ids=[f"{c}x{s}x{s}" for c, s in GEOMETRIES])
def test_forward_shapes(name, relation, in_chans, img):
    model = build(name, relation, in_chans, img)
    out, sizes = stage_sizes(model, torch.randn(2, in_chans, img, img))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    pools = san_pools(img)
    # the pools happen at the last stages; the earliest keep the input resolution
    expected = [img // 2 ** max(0, s - (5 - pools) + 1) for s in range(5)]
    assert sizes == [(e, e) for e in expected]
    assert min(expected) >= 4


@pytest.mark.parametrize("name,relation", [("san_pairwise", "subtraction"), ("san_patchwise", "concatenation")])
def test_imagenet_geometry_forward(name, relation):
    model = build(name, relation, 3, 224, pools=5).eval()
    with torch.no_grad():
        out, sizes = stage_sizes(model, torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    assert sizes == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]


@pytest.mark.parametrize("name,relation", VARIANTS)
def test_every_parameter_gets_a_gradient(name, relation):
    model = build(name, relation)
    x = torch.randn(2, 3, 32, 32)
    model(x).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # In training mode a BatchNorm cancels the biases just before it (their gradients are
    # rounding noise, as in any ResNet with conv biases). In eval mode, with running statistics
    # taken from this batch (so the ReLUs see normalized inputs), nothing is cancelled: every
    # parameter must have a real gradient.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its own statistics
    with torch.no_grad():
        model(x)
    model.zero_grad(set_to_none=True)
    model.eval()
    model(x).square().sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not (p.grad.abs() > 1e-8).any()]
    assert not dead, dead


@pytest.mark.parametrize("name,relation", [("san_pairwise", "subtraction"), ("san_patchwise", "concatenation")])
def test_same_seed_same_weights_and_output(name, relation):
    x = torch.randn(2, 3, 32, 32)
    a, b, c = (build(name, relation, seed=s) for s in (0, 0, 1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


# The paper's Table 2 (ImageNet, 224 px, 1000 classes): SAN10/15/19, pairwise and patchwise.
# Pairwise leaves out two dead biases of the reference per block (2 + mid/8 parameters).
PAPER = [("san_pairwise", "san10", 10.5, 10_531_592), ("san_patchwise", "san10", 11.8, 11_841_124),
         ("san_pairwise", "san15", 14.1, 14_065_048), ("san_patchwise", "san15", 16.2, 16_181_310),
         ("san_pairwise", "san19", 17.6, 17_595_640), ("san_patchwise", "san19", 20.5, 20_518_470)]


@pytest.mark.parametrize("name,layout,millions,exact", PAPER)
def test_paper_parameter_counts(name, layout, millions, exact):
    model = architectures.create_model(name, num_classes=1000, in_chans=3, img_size=224, layout=layout)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == millions
    assert n == exact
    if name == "san_pairwise":  # the reference's count: + position-conv bias (2) + gamma's last bias (mid/8)
        blocks = [m for m in model.modules() if isinstance(m, san.PairwiseSA)]
        ref = n + sum(2 + b.gamma[-1].out_channels for b in blocks)
        assert round(ref / 1e6, 1) == millions


def test_weight_channels():
    assert [san.weight_channels(m) for m in (4, 8, 12, 16, 64, 512)] == [1, 1, 3, 2, 8, 64]


# ---------------------------------------------------------------- equations, by direct loops

def reflect(i: int, n: int) -> int:
    """Reflection without repeating the edge (ReflectionPad2d), repeated where needed."""
    if n == 1:
        return 0
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def randomize_bn(module):
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return module.eval()


def lin(conv, v):
    out = conv.weight[:, :, 0, 0] @ v
    return out if conv.bias is None else out + conv.bias


def bn(m, v):
    return (v - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias


def gamma(seq, v):
    """BN, ReLU, conv, BN, ReLU, conv on one vector."""
    v = lin(seq[2], bn(seq[0], v).relu())
    return lin(seq[5], bn(seq[3], v).relu())


def footprint(h, w, k, H, W):
    p = k // 2
    return [(reflect(h - p + a, H), reflect(w - p + b, W)) for a in range(k) for b in range(k)]


def loop_pairwise(m, x, relation):
    B, C, H, W = x.shape
    k, mid = m.kernel, m.beta.out_channels
    cw = m.gamma[-1].out_channels
    xs = [-1 + 2 * w / (W - 1) for w in range(W)]
    ys = [-1 + 2 * h / (H - 1) for h in range(H)]
    pos = lambda h, w: lin(m.pos, torch.tensor([xs[w], ys[h]], dtype=x.dtype))
    y = torch.zeros(B, mid, H, W, dtype=x.dtype)
    for n in range(B):
        for h in range(H):
            for w in range(W):
                phi_i = lin(m.phi, x[n, :, h, w])
                logits, betas = [], []
                for hj, wj in footprint(h, w, k, H, W):
                    psi_j = lin(m.psi, x[n, :, hj, wj])
                    delta = {"subtraction": lambda: phi_i - psi_j, "summation": lambda: phi_i + psi_j,
                             "hadamard": lambda: phi_i * psi_j, "dot": lambda: (phi_i @ psi_j).view(1),
                             "concatenation": lambda: torch.cat([phi_i, psi_j])}[relation]()
                    logits.append(gamma(m.gamma, torch.cat([delta, pos(h, w) - pos(hj, wj)])))
                    betas.append(lin(m.beta, x[n, :, hj, wj]))
                alpha = torch.stack(logits).softmax(0)  # [k*k, cw], softmax over the footprint
                for c in range(mid):
                    y[n, c, h, w] = sum(alpha[j, c % cw] * betas[j][c] for j in range(k * k))
    return y


def loop_patchwise(m, x, relation):
    B, C, H, W = x.shape
    k, mid = m.kernel, m.beta.out_channels
    cw = m.gamma[-1].out_channels // (k * k)
    y = torch.zeros(B, mid, H, W, dtype=x.dtype)
    for n in range(B):
        for h in range(H):
            for w in range(W):
                R = footprint(h, w, k, H, W)
                phi = [lin(m.phi, x[n, :, a, b]) for a, b in R]
                psi = [lin(m.psi, x[n, :, a, b]) for a, b in R]
                phi_i = lin(m.phi, x[n, :, h, w])
                if relation == "star":
                    delta = torch.stack([phi_i @ p for p in psi])
                elif relation == "clique":
                    delta = torch.stack([phi[j] @ psi[l] for j in range(k * k) for l in range(k * k)])
                else:  # concatenation: phi(x_i), then psi(x_j) channel by channel over the footprint
                    delta = torch.cat([phi_i, torch.stack(psi, 1).flatten()])
                alpha = gamma(m.gamma, delta).view(cw, k * k)  # no softmax
                betas = [lin(m.beta, x[n, :, a, b]) for a, b in R]
                for c in range(mid):
                    y[n, c, h, w] = sum(alpha[c % cw, j] * betas[j][c] for j in range(k * k))
    return y


# C = 16, C/16-style relation width 3, mid = 24 -> 3 weight channels shared by 8 groups
# (c mod 3); H != W so that x and y cannot be swapped unnoticed.
@pytest.mark.parametrize("relation", PAIRWISE)
def test_pairwise_equation(relation):
    torch.manual_seed(0)
    m = randomize_bn(san.PairwiseSA(16, 3, 24, 3, relation).double())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), loop_pairwise(m, x, relation), atol=1e-5, rtol=0)
        w = m.weights(x)
    assert w.shape == (2, 3, 9, 30) and torch.allclose(w.sum(2), torch.ones(2, 3, 30, dtype=torch.float64))


@pytest.mark.parametrize("relation", PATCHWISE)
def test_patchwise_equation(relation):
    torch.manual_seed(0)
    m = randomize_bn(san.PatchwiseSA(16, 3, 24, 3, relation).double())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), loop_patchwise(m, x, relation), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sa,loop,relation", [(san.PairwiseSA, loop_pairwise, "subtraction"),
                                              (san.PatchwiseSA, loop_patchwise, "concatenation")])
def test_large_footprint_on_a_small_map(sa, loop, relation):
    """7x7 footprint on a 3x4 map: the padding (3) reaches past the map, the reflection repeats."""
    torch.manual_seed(0)
    m = randomize_bn(sa(16, 2, 16, 7, relation).double())
    x = torch.randn(1, 16, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), loop(m, x, relation), atol=1e-5, rtol=0)


@pytest.mark.parametrize("h,w,k", [(5, 6, 3), (5, 6, 5), (2, 3, 7), (1, 1, 7), (1, 4, 3)])
def test_windows_reflect(h, w, k):
    x = torch.randn(2, 3, h, w)
    got = san.windows(x, k)
    want = torch.stack([torch.stack([x[:, :, a, b] for a, b in footprint(i, j, k, h, w)], -1)
                        for i in range(h) for j in range(w)], -1)
    assert torch.equal(got, want)
