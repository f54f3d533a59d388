"""SAN (Zhao, Jia, Koltun 2020): shapes at the study's geometries, gradients, seeding, the
paper's parameter counts, the attention equations against direct loops over pixels, and
checkpoints of the reference code (hszhao/SAN at d88b022) loaded through the key map and
checked against loops and a functional forward written from its definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

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
    with torch.device("meta"):
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


# ---------------------------------------------------------------- the reference code (hszhao/SAN @ d88b022)
# Names and shapes of model/san.py's modules, written here from its definitions: SAN(sa_type, layers,
# kernels, num_classes) with c = 64, widths c, 4c, 8c, 16c, 32c; Bottleneck(in = out = C, rel = C/16,
# mid = C/4, share = 8); SAM's conv1/conv2/conv3 (1x1, biased), conv_w, and conv_p (pairwise).

REF_WIDTHS = [64, 256, 512, 1024, 2048]


def bn_shapes(name, c):
    return {f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,),
            f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()}


def conv_shapes(name, cin, cout, bias=True):
    return {f"{name}.weight": (cout, cin, 1, 1), **({f"{name}.bias": (cout,)} if bias else {})}


def ref_sam_shapes(sa_type, c, k, prefix=""):
    rel, mid = c // 16, c // 4
    cw = mid // 8
    out = {**conv_shapes(prefix + "conv1", c, rel), **conv_shapes(prefix + "conv2", c, rel),
           **conv_shapes(prefix + "conv3", c, mid)}
    w = prefix + "conv_w"
    if sa_type == 0:
        out.update({**bn_shapes(f"{w}.0", rel + 2), **conv_shapes(f"{w}.2", rel + 2, rel, bias=False),
                    **bn_shapes(f"{w}.3", rel), **conv_shapes(f"{w}.5", rel, cw),
                    **conv_shapes(prefix + "conv_p", 2, 2)})
    else:
        d = rel * (k * k + 1)
        out.update({**bn_shapes(f"{w}.0", d), **conv_shapes(f"{w}.2", d, cw, bias=False),
                    **bn_shapes(f"{w}.3", cw), **conv_shapes(f"{w}.5", cw, k * k * cw)})
    return out


def ref_san_shapes(sa_type, layers, kernels, num_classes, widths=REF_WIDTHS, in_chans=3):
    out = {**conv_shapes("conv_in", in_chans, widths[0], bias=False), **bn_shapes("bn_in", widths[0])}
    cin = widths[0]
    for s, (n, k, c) in enumerate(zip(layers, kernels, widths)):
        out.update(conv_shapes(f"conv{s}", cin, c, bias=False))
        out.update(bn_shapes(f"bn{s}", c))
        for i in range(n):
            b = f"layer{s}.{i}."
            out.update({**bn_shapes(b + "bn1", c), **ref_sam_shapes(sa_type, c, k, b + "sam."),
                        **bn_shapes(b + "bn2", c // 4), **conv_shapes(b + "conv", c // 4, c)})
        cin = c
    out.update({"fc.weight": (num_classes, cin), "fc.bias": (num_classes,)})
    return out


def ref_state(shapes, dtype=torch.float64, seed=0):
    """Random values: weights ~ N(0, 1/fan_in), biases and BN affine/mean small, BN variance in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            out[name] = torch.tensor(7)
        elif leaf == "running_var":
            out[name] = torch.rand(shape, generator=g, dtype=dtype) + 0.5
        elif len(shape) == 4:
            out[name] = torch.randn(shape, generator=g, dtype=dtype) / shape[1] ** 0.5
        elif leaf == "weight" and len(shape) == 2:
            out[name] = torch.randn(shape, generator=g, dtype=dtype) / shape[1] ** 0.5
        elif leaf == "weight":  # BN scale
            out[name] = 1 + 0.2 * torch.randn(shape, generator=g, dtype=dtype)
        else:
            out[name] = 0.3 * torch.randn(shape, generator=g, dtype=dtype)
    return out


def n_params(shapes):
    return sum(math.prod(s) for n, s in shapes.items() if not n.rsplit(".", 1)[1].startswith(("running", "num_")))


@pytest.mark.parametrize("sa_type,exact", [(0, 10_531_848), (1, 11_841_124)])
def test_reference_parameter_counts(sa_type, exact):
    """The reference's SAN10 (dead biases included): 10.5 M pairwise, 11.8 M patchwise, as its README."""
    assert n_params(ref_san_shapes(sa_type, [2, 1, 2, 4, 1], [3, 7, 7, 7, 7], 1000)) == exact


def ref_reflect(i, n):
    """The reference kernels' reflection (one bounce: -i before the map, 2(n-1)-i past it)."""
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def ref_bn(sd, name, v, train):
    """BatchNorm over the rows of v [N, C]: batch statistics (biased variance) when training."""
    if train:
        mean, var = v.mean(0), v.var(0, unbiased=False)
    else:
        mean, var = sd[name + ".running_mean"], sd[name + ".running_var"]
    return (v - mean) / torch.sqrt(var + 1e-5) * sd[name + ".weight"] + sd[name + ".bias"]


def ref_lin(sd, name, v):
    """1x1 conv on rows v [..., Cin]."""
    out = v @ sd[name + ".weight"][:, :, 0, 0].T
    return out + sd[name + ".bias"] if name + ".bias" in sd else out


def ref_gamma(sd, v, train):
    v = ref_lin(sd, "conv_w.2", ref_bn(sd, "conv_w.0", v, train).relu())
    return ref_lin(sd, "conv_w.5", ref_bn(sd, "conv_w.3", v, train).relu())


def ref_sam_loop(sa_type, sd, x, k, train):
    """One reference SAM (stride 1, dilation 1, reflection padding) by loops over pixels and the
    footprint, from its definitions; sd holds the reference's names (dead biases included)."""
    B, C, H, W = x.shape
    pad = k // 2
    feat = lambda n, h, w, name: ref_lin(sd, name, x[n, :, h, w])
    R = lambda h, w: [(ref_reflect(h - pad + a, H), ref_reflect(w - pad + b, W)) for a in range(k) for b in range(k)]
    if sa_type == 0:
        coord = lambda h, w: torch.tensor([-1 + 2 * w / (W - 1), -1 + 2 * h / (H - 1)], dtype=x.dtype)
        pos = lambda h, w: ref_lin(sd, "conv_p", coord(h, w))
        rows = [torch.cat([feat(n, h, w, "conv1") - feat(n, hj, wj, "conv2"), pos(h, w) - pos(hj, wj)])
                for n in range(B) for h in range(H) for w in range(W) for hj, wj in R(h, w)]
        logits = ref_gamma(sd, torch.stack(rows), train)  # [B*H*W*k*k, mid/8]
        alpha = logits.view(B, H, W, k * k, -1).softmax(3)  # over the footprint
    else:
        # [phi(x_i), psi(x_j) for j in R(i)], the psi part channel by channel (nn.Unfold's order)
        rows = [torch.cat([feat(n, h, w, "conv1"), torch.stack([feat(n, hj, wj, "conv2") for hj, wj in R(h, w)], 1).flatten()])
                for n in range(B) for h in range(H) for w in range(W)]
        out = ref_gamma(sd, torch.stack(rows), train)  # [B*H*W, (mid/8) * k*k], weight channel major
        alpha = out.view(B, H, W, -1, k * k).transpose(3, 4)  # no softmax
    mid = sd["conv3.weight"].shape[0]
    cw = alpha.shape[-1]
    share = torch.arange(mid) % cw  # output channel c uses weight channel c mod mid/8
    y = torch.zeros(B, mid, H, W, dtype=x.dtype)
    for n in range(B):
        for h in range(H):
            for w in range(W):
                for j, (hj, wj) in enumerate(R(h, w)):
                    y[n, :, h, w] += alpha[n, h, w, j, share] * feat(n, hj, wj, "conv3")
    return y


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("sa_type", [0, 1], ids=["pairwise", "patchwise"])
def test_reference_sa_layer_against_loop(sa_type, k, train):
    """A reference SAM's state dict (C = 64: rel 4, mid 16, 2 weight channels) loaded into our layer
    through the key map computes what the loop over pixels computes from the reference's
    definitions, with its two dead pairwise biases set (non-zero) and dropped."""
    c = 64
    sd = ref_state(ref_sam_shapes(sa_type, c, k), seed=k)
    layer = (san.PairwiseSA if sa_type == 0 else san.PatchwiseSA)(c, c // 16, c // 4, k).double()
    dropped = san.load_reference_state_dict(layer, sd)
    assert dropped == (["conv_p.bias", "conv_w.5.bias"] if sa_type == 0 else [])
    assert all(torch.equal(layer.state_dict()[ours], sd[ref]) for ref, ours in san.reference_key_map(layer).items())
    layer.train(train)
    x = torch.randn(2, c, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = layer(x), ref_sam_loop(sa_type, sd, x, k, train)
    assert got.shape == (2, 16, 5, 6)
    assert (got - want).abs().max() <= 1e-6 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("sa_type,name", [(0, "san_pairwise"), (1, "san_patchwise")])
def test_san10_reference_state_dict_loads(sa_type, name):
    """Every key of the reference's SAN10 (ImageNet, 1000 classes) is consumed by the key map, with its
    shape; nothing of ours is left out; the only keys dropped are the dead pairwise biases."""
    shapes = ref_san_shapes(sa_type, [2, 1, 2, 4, 1], [3, 7, 7, 7, 7], 1000)
    with torch.device("meta"):
        model = architectures.create_model(name, num_classes=1000, in_chans=3, img_size=224)
    mapping, dead = san.reference_key_map(model), san.reference_dead_keys(model)
    assert set(mapping) | set(dead) == set(shapes) and not set(mapping) & set(dead)
    ours = model.state_dict()
    assert sorted(mapping.values()) == sorted(ours)
    assert all(tuple(ours[o].shape) == shapes[r] for r, o in mapping.items())
    assert len(dead) == (2 * 10 if sa_type == 0 else 0)  # 10 blocks
    assert all(k.endswith(("sam.conv_p.bias", "sam.conv_w.5.bias")) for k in dead)
    # the load itself, with real values and the "module." prefix DistributedDataParallel saves
    sd = {f"module.{k}": torch.full(s, 0.5) if s else torch.tensor(3) for k, s in shapes.items()}
    assert san.load_reference_state_dict(model.to_empty(device="cpu"), sd) == sorted(dead)
    assert all(torch.equal(model.state_dict()[o], sd[f"module.{r}"]) for r, o in mapping.items())
    with pytest.raises(KeyError, match="unexpected"):
        san.load_reference_state_dict(model, {**sd, "module.extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="missing"):
        san.load_reference_state_dict(model, {k: v for k, v in sd.items() if not k.endswith("fc.bias")})


def ref_sam_fast(sa_type, sd, p, x, k, train):
    """One reference SAM, vectorized (F.pad reflect + unfold), for the network-level forward."""
    b, _, h, w = x.shape
    conv = lambda name, t: F.conv2d(t, sd[f"{p}{name}.weight"], sd.get(f"{p}{name}.bias"))
    bnf = lambda name, t: F.batch_norm(t, sd[f"{p}{name}.running_mean"], sd[f"{p}{name}.running_var"],
                                       sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"], training=train)
    win = lambda t: F.unfold(F.pad(t, (k // 2,) * 4, mode="reflect"), k).view(t.shape[0], t.shape[1], k * k, h * w)
    x1, x2, x3 = conv("conv1", x), conv("conv2", x), conv("conv3", x)
    if sa_type == 0:
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=x.dtype), torch.linspace(-1, 1, w, dtype=x.dtype), indexing="ij")
        pos = conv("conv_p", torch.stack([xs, ys])[None])
        delta = torch.cat([x1.view(b, -1, 1, h * w) - win(x2), (pos.view(1, 2, 1, h * w) - win(pos)).expand(b, -1, -1, -1)], 1)
        wgt = conv("conv_w.5", bnf("conv_w.3", conv("conv_w.2", bnf("conv_w.0", delta).relu())).relu()).softmax(2)
    else:
        delta = torch.cat([x1.view(b, -1, 1, h * w), win(x2).reshape(b, -1, 1, h * w)], 1)
        wgt = conv("conv_w.5", bnf("conv_w.3", conv("conv_w.2", bnf("conv_w.0", delta).relu())).relu())
        wgt = wgt.view(b, -1, k * k, h * w)
    cw = wgt.shape[1]
    v = win(x3).view(b, -1, cw, k * k, h * w)
    return (v * wgt[:, None]).sum(3).view(b, -1, h, w)


def ref_san_forward(sa_type, sd, layers, kernels, x, train):
    """model/san.py's SAN.forward, functionally: stem, then per stage pool, transition, blocks, BN, ReLU."""
    conv = lambda name, t: F.conv2d(t, sd[f"{name}.weight"], sd.get(f"{name}.bias"))
    bnf = lambda name, t: F.batch_norm(t, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                                       sd[f"{name}.weight"], sd[f"{name}.bias"], training=train)
    x = bnf("bn_in", conv("conv_in", x)).relu()
    for s, (n, k) in enumerate(zip(layers, kernels)):
        x = conv(f"conv{s}", F.max_pool2d(x, 2, 2))
        for i in range(n):
            b = f"layer{s}.{i}."
            out = ref_sam_fast(sa_type, sd, b + "sam.", bnf(b + "bn1", x).relu(), k, train)
            x = x + conv(b + "conv", bnf(b + "bn2", out).relu())
        x = bnf(f"bn{s}", x).relu()
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("sa_type,name", [(0, "san_pairwise"), (1, "san_patchwise")])
def test_reference_network_forward(sa_type, name, train):
    """SAN10 at narrow widths (the reference's structure with c = 32 and the widths 32, 32, 64, 64, 64),
    five pools at 128 px (4 x 4 last maps): a reference-named state dict loaded into our model gives
    the reference's forward: stem, pools, transitions, pre-activation blocks, stage BN/ReLU, head."""
    widths, layers, kernels = [32, 32, 64, 64, 64], [2, 1, 2, 4, 1], [3, 7, 7, 7, 7]
    sd = ref_state(ref_san_shapes(sa_type, layers, kernels, 10, widths=widths), seed=1)
    for key in sd:  # patchwise weights are not normalized: keep them small, or ten blocks overflow
        if sa_type == 1 and key.endswith(("conv_w.5.weight", "conv_w.5.bias")):
            sd[key] = sd[key] * 0.1
    model = architectures.create_model(name, num_classes=10, in_chans=3, img_size=128, widths=widths,
                                       stem_width=32, pools=5).double()
    san.load_reference_state_dict(model, sd)
    model.train(train)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got, want = model(x), ref_san_forward(sa_type, sd, layers, kernels, x, train)
    assert (got - want).abs().max() <= 1e-9 * want.abs().max()


def test_reference_relations_only():
    layer = san.PairwiseSA(64, 4, 16, 3, "dot")
    with pytest.raises(ValueError, match="subtraction"):
        san.load_reference_state_dict(layer, ref_state(ref_sam_shapes(0, 64, 3)))


# ---------------------------------------------------------------- initialization and weight decay

def test_init_is_pytorch_default_as_the_reference():
    """hszhao/SAN initializes nothing (PyTorch defaults): kaiming-uniform(a = sqrt 5) convs and head,
    i.e. |w|, |b| <= 1/sqrt(fan_in), BN weight 1 and bias 0."""
    model = build("san_pairwise", "subtraction")
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            bound = 1 / (m.weight[0].numel() ** 0.5)
            assert m.weight.abs().max() <= bound and m.weight.std() > bound / 4
            assert m.bias is None or m.bias.abs().max() <= bound
        elif isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))


@pytest.mark.parametrize("name,relation", [("san_pairwise", "subtraction"), ("san_patchwise", "concatenation")])
def test_weight_decay_follows_the_reference(name, relation):
    from architectures.hparams import id_default
    from runner.train.optim import param_groups

    hp = architectures.get_family(name).hparams
    assert hp().decay_scheme == "reference" and id_default(hp.model_fields["decay_scheme"]) == "weights_only"
    n = sum(p.numel() for p in build(name, relation).parameters())
    decayed = lambda groups: sum(p.numel() for g in groups if g["weight_decay"] > 0 for p in g["params"])
    # reference: SGD(model.parameters(), weight_decay=1e-4) decays everything, norms and biases included
    assert decayed(param_groups(build(name, relation), 1e-4)) == n
    old = build(name, relation, decay_scheme="weights_only")
    want = sum(p.numel() for p in old.parameters() if p.ndim >= 2)
    assert decayed(param_groups(old, 1e-4)) == want < n
