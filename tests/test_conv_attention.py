"""Cordonnier et al. (2020) full-pixel attention: the conv theorem, the score formulas
against direct loops, shapes, gradients, seeding and the reference's parameter counts."""

from __future__ import annotations

import math

import pytest
import torch

import architectures
from architectures.conv_attention.model import ConvAttentionNet, Learned2DAttention, QuadraticAttention

ENCODINGS = {
    "quadratic": {"positional_encoding": "quadratic"},
    "quadratic_anisotropic": {"positional_encoding": "quadratic", "anisotropic": True},
    "learned_2d": {"positional_encoding": "learned_2d"},
    "learned_2d_content": {"positional_encoding": "learned_2d", "use_content": True},
}
SMALL = {"d_model": 16, "n_layers": 2, "heads": 3, "dff": 24}


def small_model(encoding: str, *, num_classes=5, in_chans=3, img_size=8, **over):
    return architectures.create_model("conv_attention", num_classes=num_classes, in_chans=in_chans,
                                      img_size=img_size, **{**SMALL, **ENCODINGS[encoding], **over})


# --- the theorem ---------------------------------------------------------------------------------


@pytest.mark.parametrize("anisotropic", [False, True])
def test_quadratic_attention_with_k2_sharp_heads_is_a_kxk_convolution(anisotropic):
    """Theorem 1: K^2 heads centred on the K x K offsets with alpha -> inf reproduce a K x K conv."""
    torch.manual_seed(0)
    k, side, c_in, c_out, alpha = 3, 7, 4, 5, 30.0
    conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2).double()
    attn = QuadraticAttention(c_in, k * k, side, anisotropic=anisotropic, out_dim=c_out).double().eval()
    offsets = [(di - k // 2, dj - k // 2) for di in range(k) for dj in range(k)]  # head h <-> kernel tap h
    with torch.no_grad():
        attn.centres.copy_(torch.tensor(offsets, dtype=torch.float64))
        if anisotropic:  # W = alpha * R(theta): any rotation gives Sigma^-1 = alpha^2 I
            th = 0.7
            rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
            attn.spreads.copy_(alpha * rot.expand(k * k, 2, 2))
        else:
            attn.spreads.fill_(alpha)
        for h, (di, dj) in enumerate(offsets):  # value block of head h = the conv tap it stands for
            attn.value.weight[:, h * c_in:(h + 1) * c_in] = conv.weight[:, :, di + k // 2, dj + k // 2]
        attn.value.bias.copy_(conv.bias)
    x = torch.randn(2, c_in, side, side, dtype=torch.float64)
    tokens = x.permute(0, 2, 3, 1).reshape(2, side * side, c_in)
    with torch.no_grad():
        got = attn(tokens).view(2, side, side, c_out).permute(0, 3, 1, 2)
        want = conv(x)
    # Interior pixels only: at the border a head whose centre lies outside the image cannot attend
    # to zeros (softmax over existing pixels), it lands on the nearest pixel, i.e. replicate padding
    # rather than the conv's zero padding.
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(got[inner], want[inner], atol=1e-5, rtol=0)
    assert not torch.allclose(got, want, atol=1e-5)  # and the border does differ from zero padding


def test_gaussian_heads_exposes_centres_and_spreads():
    m = small_model("quadratic_anisotropic")
    heads = m.gaussian_heads()
    assert len(heads) == SMALL["n_layers"]
    for blk, (centres, inv) in zip(m.blocks, heads):
        assert centres.shape == (SMALL["heads"], 2) and inv.shape == (SMALL["heads"], 2, 2)
        w = blk.attn.spreads.detach()
        torch.testing.assert_close(inv, w @ w.transpose(1, 2))
        torch.testing.assert_close(centres, blk.attn.centres.detach())
    iso = small_model("quadratic").blocks[0].attn
    _, inv = iso.centres_and_spreads()
    torch.testing.assert_close(inv, iso.spreads.detach().pow(2)[:, None, None] * torch.eye(2))
    assert small_model("learned_2d").gaussian_heads() == []


# --- score formulas against direct loops (B=2, 4x4 grid) -----------------------------------------

SIDE, DIM, HEADS = 4, 6, 2


def loop_attention(x, score, value_w, value_b):
    """x [B, N, D] float64; score(b, h, query (i, j), key (k, l)) -> float. Softmax over keys,
    weighted sum of the full-width inputs per head, heads concatenated, then the value Linear."""
    bsz, n, d = x.shape
    out = torch.zeros(bsz, n, HEADS * d, dtype=torch.float64)
    pix = [(p // SIDE, p % SIDE) for p in range(n)]
    for b in range(bsz):
        for h in range(HEADS):
            for qi, qp in enumerate(pix):
                s = [score(b, h, qp, kp) for kp in pix]
                m = max(s)
                e = [math.exp(v - m) for v in s]
                z = sum(e)
                for ki in range(n):
                    out[b, qi, h * d:(h + 1) * d] += e[ki] / z * x[b, ki]
    return out @ value_w.T + value_b


@pytest.mark.parametrize("anisotropic", [False, True])
def test_quadratic_scores_match_direct_formula(anisotropic):
    torch.manual_seed(1)
    attn = QuadraticAttention(DIM, HEADS, SIDE, anisotropic=anisotropic).double().eval()
    with torch.no_grad():  # spread the heads so the softmax is far from uniform
        attn.centres.copy_(torch.tensor([[1.3, -0.4], [-2.0, 0.7]]))
        attn.spreads.mul_(1.5)
        if anisotropic:
            attn.spreads.add_(0.3 * torch.randn_like(attn.spreads))
    centres = attn.centres.detach().tolist()
    if anisotropic:
        w = attn.spreads.detach()
        inv = (w @ w.transpose(1, 2)).tolist()
    else:
        inv = [[[a * a, 0.0], [0.0, a * a]] for a in attn.spreads.detach().tolist()]

    def score(b, h, q, k):
        u = (k[0] - q[0] - centres[h][0], k[1] - q[1] - centres[h][1])
        s = inv[h]
        return -0.5 * (u[0] * (s[0][0] * u[0] + s[0][1] * u[1]) + u[1] * (s[1][0] * u[0] + s[1][1] * u[1]))

    x = torch.randn(2, SIDE * SIDE, DIM, dtype=torch.float64)
    want = loop_attention(x, score, attn.value.weight.detach(), attn.value.bias.detach())
    with torch.no_grad():
        torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=0)


def test_learned_2d_scores_match_direct_formula():
    torch.manual_seed(2)
    attn = Learned2DAttention(DIM, HEADS, SIDE).double().eval()
    with torch.no_grad():  # init is N(0, 0.02): scale up so the scores matter
        for p in (attn.row_table, attn.col_table, attn.row_keys.weight, attn.col_keys.weight):
            p.normal_()
    e_row, e_col = attn.row_table.detach(), attn.col_table.detach()
    u_row, u_col = attn.row_keys.weight.detach(), attn.col_keys.weight.detach()  # [H, D]

    def score(b, h, q, k):  # u_h^row . e_row[d_row] + u_h^col . e_col[d_col], unscaled
        return float(u_row[h] @ e_row[k[0] - q[0] + SIDE - 1] + u_col[h] @ e_col[k[1] - q[1] + SIDE - 1])

    x = torch.randn(2, SIDE * SIDE, DIM, dtype=torch.float64)
    want = loop_attention(x, score, attn.value.weight.detach(), attn.value.bias.detach())
    with torch.no_grad():
        torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=0)


def test_learned_2d_content_scores_match_direct_formula():
    torch.manual_seed(3)
    attn = Learned2DAttention(DIM, HEADS, SIDE, use_content=True).double().eval()
    with torch.no_grad():
        for p in (attn.row_table, attn.col_table, attn.query.weight, attn.key.weight, attn.query.bias):
            p.normal_()
    x = torch.randn(2, SIDE * SIDE, DIM, dtype=torch.float64)
    with torch.no_grad():
        q = (x @ attn.query.weight.T + attn.query.bias).view(2, -1, HEADS, DIM)
        k = (x @ attn.key.weight.T + attn.key.bias).view(2, -1, HEADS, DIM)
    e_row, e_col, half = attn.row_table.detach(), attn.col_table.detach(), DIM // 2

    def score(b, h, qp, kp):  # (q.k + q[:d/2] . e_row[d_row] + q[d/2:] . e_col[d_col]) / sqrt(d)
        qv, kv = q[b, qp[0] * SIDE + qp[1], h], k[b, kp[0] * SIDE + kp[1], h]
        pos = qv[:half] @ e_row[kp[0] - qp[0] + SIDE - 1] + qv[half:] @ e_col[kp[1] - qp[1] + SIDE - 1]
        return float((qv @ kv + pos) / math.sqrt(DIM))

    want = loop_attention(x, score, attn.value.weight.detach(), attn.value.bias.detach())
    with torch.no_grad():
        torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [
    lambda: QuadraticAttention(DIM, HEADS, SIDE, dropout=0.5),
    lambda: Learned2DAttention(DIM, HEADS, SIDE, dropout=0.5),
    lambda: Learned2DAttention(DIM, HEADS, SIDE, use_content=True, dropout=0.5),
], ids=["quadratic", "learned_2d", "learned_2d_content"])
def test_attention_dropout_in_training_only_one_mask_per_image(make):
    torch.manual_seed(4)
    attn = make()
    x = torch.randn(1, SIDE * SIDE, DIM).expand(2, -1, -1)  # the same image twice
    with torch.no_grad():
        y = attn.train()(x)
        assert not torch.allclose(y[0], y[1])  # each image draws its own dropout mask
        e1, e2 = attn.eval()(x), attn(x)
    assert torch.equal(e1, e2) and torch.allclose(e1[0], e1[1])


# --- whole model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("in_chans,img_size", [(1, 8), (1, 28), (3, 32), (3, 64)])
def test_forward_shapes(encoding, in_chans, img_size):
    torch.manual_seed(0)
    m = small_model(encoding, in_chans=in_chans, img_size=img_size).eval()
    side = img_size // 2
    attn = m.blocks[0].attn  # relative geometry sized from the grid after space-to-depth
    if encoding.startswith("quadratic"):
        assert attn.offsets.shape == (side * side, side * side, 2)
    else:
        assert attn.row_table.shape[0] == attn.col_table.shape[0] == 2 * side - 1
    with torch.no_grad():
        out = m(torch.randn(2, in_chans, img_size, img_size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_forward_224_with_large_downsample(encoding):
    m = small_model(encoding, img_size=224, downsample=8, d_model=8, heads=2, dff=8, n_layers=1).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 224, 224))  # 28 x 28 = 784 tokens
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_space_to_depth_keeps_each_block_together():
    m = small_model("quadratic", in_chans=2, img_size=8)
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    t = m.space_to_depth(x)  # [1, 16, 8]
    assert t.shape == (1, 16, 8)
    # token (row 1, col 2) holds pixels rows 2-3, cols 4-5 of both channels, ordered (row, col, channel)
    want = torch.stack([x[0, c, 2 + i, 4 + j] for i in range(2) for j in range(2) for c in range(2)])
    torch.testing.assert_close(t[0, 1 * 4 + 2], want)
    with pytest.raises(ValueError, match="built for 8x8"):
        m(torch.randn(1, 2, 16, 16))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_parameter_gets_a_gradient(encoding):
    torch.manual_seed(0)
    m = small_model(encoding)  # training mode: dropout on
    m(torch.randn(3, 3, 8, 8)).logsumexp(-1).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_same_seed_same_weights_and_output(encoding):
    x = torch.randn(2, 3, 8, 8)

    def make(seed):
        torch.manual_seed(seed)
        m = small_model(encoding).eval()
        with torch.no_grad():
            return m.state_dict(), m(x)

    (w1, y1), (w2, y2), (_, y3) = make(0), make(0), make(1)
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    m = architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32)
    attn = m.blocks[0].attn
    centres = torch.cat([b.attn.centres.detach() for b in m.blocks])
    spreads = torch.cat([b.attn.spreads.detach() for b in m.blocks])
    assert 1.0 < centres.std() < 3.0  # N(0, 2^2)
    assert (spreads - 1).abs().max() < 0.05 and spreads.std() < 0.02  # 1 + N(0, 0.01^2)
    assert abs(attn.value.weight.std().item() - 0.02) < 0.001 and attn.value.bias.abs().max() == 0


# --- parameter counts of the paper's three models (32x32x3, 10 classes, defaults) ------------------
# From the reference code: per layer a value Linear(9*400 -> 400) after the full-width heads, BERT's
# attention output Linear(400 -> 400), two LayerNorms, FFN 400 -> 512 -> 400; embed Linear(12 -> 400);
# head Linear(400 -> 10). Quadratic adds 9 centres (2) + 9 alphas per layer. learned_2d adds two
# 31 x 400 tables and u^row, u^col (9 x 400 each). + content: Linear(400 -> 9*400) query and key, and
# the two tables are 31 x 200 (the query's halves score rows and columns), no u vectors.


@pytest.mark.parametrize("kw,published,exact", [
    ({"positional_encoding": "quadratic"}, 12.09e6, 12_086_844),
    ({"positional_encoding": "learned_2d"}, 12.27e6, 12_278_682),
    ({"positional_encoding": "learned_2d", "use_content": True}, 29.48e6, 29_484_282),
])
def test_parameter_counts_match_the_reference(kw, published, exact):
    m = architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32, **kw)
    n = sum(p.numel() for p in m.parameters())
    assert abs(n - published) <= 0.01e6
    assert n == exact


def test_impossible_hparams_are_refused():
    with pytest.raises(ValueError, match="downsample"):
        architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=30, downsample=4)
    with pytest.raises(ValueError, match="use_content"):
        architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32, use_content=True)
    assert isinstance(small_model("learned_2d"), ConvAttentionNet)
