"""Cordonnier et al. (2020) full-pixel attention: the conv theorem, the score formulas
against direct loops, the whole model against the reference's formulas through its state
dict (epfml/attention-cnn 9ffaa30), its init, weight-decay rule and dropout mask, shapes,
gradients, seeding and the reference's parameter counts."""

from __future__ import annotations

import math

import pytest
import torch

import architectures
from architectures.hparams import id_default
from architectures.conv_attention.model import ConvAttentionNet, Learned2DAttention, QuadraticAttention
from runner.train.optim import param_groups

ENCODINGS = {
    "quadratic": {"positional_encoding": "quadratic"},
    "quadratic_anisotropic": {"positional_encoding": "quadratic", "anisotropic": True},
    "learned_2d": {"positional_encoding": "learned_2d"},
    "learned_2d_content": {"positional_encoding": "learned_2d", "use_content": True},
    "learned_2d_content_u": {"positional_encoding": "learned_2d", "use_content": True, "content_form": "u_dot_r"},
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
    with torch.no_grad():  # redraw all N(0, 1) so the scores matter
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


CONTENT_FREE = {
    "quadratic": lambda mask: QuadraticAttention(DIM, HEADS, SIDE, dropout=0.5, dropout_mask=mask),
    "learned_2d": lambda mask: Learned2DAttention(DIM, HEADS, SIDE, dropout=0.5, dropout_mask=mask),
}
WITH_CONTENT = {
    "q_dot_r": lambda mask: Learned2DAttention(DIM, HEADS, SIDE, use_content=True, dropout=0.5, dropout_mask=mask),
    "u_dot_r": lambda mask: Learned2DAttention(DIM, HEADS, SIDE, use_content=True, content_form="u_dot_r",
                                               dropout=0.5, dropout_mask=mask),
}


def _twice(attn):
    """Outputs for the same image twice in training, then twice in eval."""
    torch.manual_seed(4)
    x = torch.randn(1, SIDE * SIDE, DIM).expand(2, -1, -1)
    with torch.no_grad():
        y = attn.train()(x)
        e1, e2 = attn.eval()(x), attn(x)
    assert torch.equal(e1, e2) and torch.allclose(e1[0], e1[1])  # no dropout in eval
    return y


@pytest.mark.parametrize("name", list(CONTENT_FREE))
def test_content_free_dropout_mask_is_shared_by_the_batch_as_the_reference(name):
    """9ffaa30's content-free probabilities [w, h, heads, w, h] have no batch dimension, so its
    nn.Dropout draws one mask for all images; per_image (the old behaviour) draws one each."""
    y = _twice(CONTENT_FREE[name]("per_batch"))
    torch.testing.assert_close(y[0], y[1])
    y = _twice(CONTENT_FREE[name]("per_image"))
    assert not torch.allclose(y[0], y[1])


@pytest.mark.parametrize("name", list(WITH_CONTENT))
@pytest.mark.parametrize("mask", ["per_batch", "per_image"])
def test_content_dropout_mask_is_per_image(name, mask):
    y = _twice(WITH_CONTENT[name](mask))
    assert not torch.allclose(y[0], y[1])  # content scores have a batch dimension: a mask per image


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


# --- initialisation: the reference's PyTorch defaults, or the old BERT-style scheme ----------------


def _linears(m):
    return [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]


def test_default_initialisation_is_the_references_pytorch_defaults():
    """BertImage never applies init_bert_weights: Linear kaiming-uniform weights and uniform
    biases within 1/sqrt(fan_in), tables N(0, 1) (nn.Embedding), LayerNorm 1 and 0,
    centres N(0, 2^2), spreads 1 + N(0, 0.01^2)."""
    torch.manual_seed(0)
    m = architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32)
    for lin in _linears(m):
        bound = 1 / math.sqrt(lin.in_features)
        assert lin.weight.abs().max() <= bound and lin.weight.std() > 0.5 * bound / math.sqrt(3)
        if lin.bias is not None:
            assert lin.bias.abs().max() <= bound and lin.bias.abs().max() > 0.5 * bound
    for mod in m.modules():
        if isinstance(mod, torch.nn.LayerNorm):
            assert torch.equal(mod.weight, torch.ones_like(mod.weight)) and not mod.bias.any()
    centres = torch.cat([b.attn.centres.detach() for b in m.blocks])
    spreads = torch.cat([b.attn.spreads.detach() for b in m.blocks])
    assert 1.5 < centres.std() < 2.5  # N(0, 2^2)
    assert (spreads - 1).abs().max() < 0.05 and spreads.std() < 0.02  # 1 + N(0, 0.01^2)
    attn = small_model("learned_2d", d_model=64).blocks[0].attn
    tables = torch.cat([attn.row_table.detach().flatten(), attn.col_table.detach().flatten()])
    assert 0.9 < tables.std() < 1.1  # nn.Embedding's N(0, 1)


def test_bert_scheme_is_the_old_init():
    torch.manual_seed(0)
    m = architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32, init_scheme="bert",
                                   positional_encoding="learned_2d")
    attn = m.blocks[0].attn
    for lin in _linears(m):
        assert abs(lin.weight.std().item() - 0.02) < 0.002
        assert lin.bias is None or not lin.bias.any()
    assert abs(attn.row_table.std().item() - 0.02) < 0.002 and abs(attn.col_table.std().item() - 0.02) < 0.002


def test_reference_init_makes_learned_attention_far_from_uniform():
    """u.r with u ~ U(+-1/sqrt(d)) and r ~ N(0, 1): score std sqrt(2/3) = 0.82 whatever d; BERT's
    N(0, 0.02) for both gives ~1e-3 at d = 16, i.e. near-uniform attention."""
    stds = {}
    for scheme in ("reference", "bert"):
        torch.manual_seed(0)
        attn = small_model("learned_2d", d_model=16, heads=4, img_size=16, init_scheme=scheme).blocks[0].attn
        with torch.no_grad():
            stds[scheme] = attn.positional_scores().std().item()
    assert 0.6 < stds["reference"] < 1.0 and stds["bert"] < 0.01


def test_changed_defaults_keep_the_old_values_as_id_defaults():
    fields = architectures.get_family("conv_attention").hparams.model_fields
    for key, default, was in [("init_scheme", "reference", "bert"), ("decay_scheme", "reference", "weights_only"),
                              ("dropout_mask", "per_batch", "per_image"), ("content_form", "q_dot_r", "q_dot_r")]:
        assert fields[key].default == default and id_default(fields[key]) == was, key


# --- weight decay: which parameters, by the reference's train.py -----------------------------------


def test_decay_reference_exempts_only_gaussian_centres_and_spreads():
    m = small_model("quadratic_anisotropic")
    exempt = {n for n, p in m.named_parameters() if not m.decayed(n, p)}
    assert exempt == {f"blocks.{i}.attn.{k}" for i in range(SMALL["n_layers"]) for k in ("centres", "spreads")}
    learned = small_model("learned_2d_content")
    assert all(learned.decayed(n, p) for n, p in learned.named_parameters())  # biases, norms, tables too
    groups = param_groups(m, 1e-4)  # the optimizer asks the model
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {n for n, p in m.named_parameters() if id(p) not in decayed} == exempt
    assert m.decayed("_orig_mod.blocks.0.attn.centres", m.blocks[0].attn.centres) is False  # compiled names


def test_decay_weights_only_is_the_old_timm_rule():
    for enc in ENCODINGS:
        m = small_model(enc, decay_scheme="weights_only")
        assert all(m.decayed(n, p) == (p.ndim >= 2) for n, p in m.named_parameters())


# --- against the reference's formulas, through its state dict (float64) ----------------------------
# The reference model (epfml/attention-cnn 9ffaa30, models/transformer.py BertImage over
# models/bert.py BertEncoder) written out from its formulas on its own parameter names and shapes:
# a state dict shaped like the reference's is loaded through load_reference_state_dict, and our
# output compared with this independent computation. Its tables have 2 M - 1 rows with
# M = max_position_embeddings = 16 (train.py's config), more than the 4 x 4 grid of an 8 x 8 image.

# batch, image side, channels, d_model, heads, layers, dff, max_position_embeddings M, classes
RB, RIMG, RC, RD, RH, RL, RF, RM, RK = 2, 8, 3, 16, 4, 2, 24, 16, 5
RSIDE = RIMG // 2
REF_FORMS = {
    "quadratic": {"positional_encoding": "quadratic"},
    "quadratic_anisotropic": {"positional_encoding": "quadratic", "anisotropic": True},
    "learned_2d": {"positional_encoding": "learned_2d"},
    "q_dot_r": {"positional_encoding": "learned_2d", "use_content": True, "content_form": "q_dot_r"},
    "u_dot_r": {"positional_encoding": "learned_2d", "use_content": True, "content_form": "u_dot_r"},
}


def reference_state_dict(form: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random parameters under the reference's names and shapes (plus two of its buffers)."""
    def u(*shape, fan_in, scale=1.0):
        return scale * (2 * torch.rand(*shape, generator=gen, dtype=torch.float64) - 1) / math.sqrt(fan_in)

    def n(*shape, std=1.0, mean=0.0):
        return mean + std * torch.randn(*shape, generator=gen, dtype=torch.float64)

    sd = {"features_upscale.weight": u(RD, 4 * RC, fan_in=4 * RC), "features_upscale.bias": u(RD, fan_in=4 * RC),
          "classifier.weight": u(RK, RD, fan_in=RD), "classifier.bias": u(RK, fan_in=RD),
          "attention_mask": torch.tensor(1.0, dtype=torch.float64)}
    for i in range(RL):
        p, s = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention.self."
        sd[s + "value.weight"], sd[s + "value.bias"] = u(RD, RH * RD, fan_in=RH * RD), u(RD, fan_in=RH * RD)
        if form.startswith("quadratic"):
            sd[s + "attention_centers"] = n(RH, 2, std=1.5)
            sd[s + "attention_spreads"] = (n(RH, std=0.3, mean=1.0) if form == "quadratic"
                                           else torch.eye(2, dtype=torch.float64) + n(RH, 2, 2, std=0.3))
        else:
            width = RD // 2 if form == "q_dot_r" else RD
            sd[s + "row_embeddings.weight"] = n(2 * RM - 1, width)
            sd[s + "col_embeddings.weight"] = n(2 * RM - 1, width)
            if form != "q_dot_r":
                sd[s + "head_keys_row.weight"] = u(RH, width, fan_in=width)
                sd[s + "head_keys_col.weight"] = u(RH, width, fan_in=width)
            if form != "learned_2d":
                for name in ("query", "key"):
                    sd[f"{s}{name}.weight"] = u(RH * RD, RD, fan_in=RD, scale=2.0)
                    sd[f"{s}{name}.bias"] = u(RH * RD, fan_in=RD)
            ar = torch.arange(RM)
            sd[s + "relative_indices"] = ar.view(1, -1) - ar.view(-1, 1) + RM - 1
        sd[p + "attention.output.dense.weight"] = u(RD, RD, fan_in=RD)
        sd[p + "attention.output.dense.bias"] = u(RD, fan_in=RD)
        sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"] = u(RF, RD, fan_in=RD), u(RF, fan_in=RD)
        sd[p + "output.dense.weight"], sd[p + "output.dense.bias"] = u(RD, RF, fan_in=RF), u(RD, fan_in=RF)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"{p}{ln}.weight"], sd[f"{p}{ln}.bias"] = n(RD, std=0.1, mean=1.0), n(RD, std=0.1)
    return sd


def reference_forward(sd: dict[str, torch.Tensor], img: torch.Tensor, form: str) -> torch.Tensor:
    """The reference's forward in float64, from its formulas (eval mode: no dropout)."""
    b, s, n = img.shape[0], RSIDE, RSIDE * RSIDE
    pix = img.permute(0, 2, 3, 1)  # NHWC, as BertImage
    # pooling_concatenate_size 2: a token's features are its 2 x 2 block, ordered (row, col, channel)
    tok = torch.cat([pix[:, i::2, j::2, :] for i in range(2) for j in range(2)], dim=-1)  # [B, s, s, 4C]
    h = (tok @ sd["features_upscale.weight"].T + sd["features_upscale.bias"]).reshape(b, n, RD)
    qr, qc = torch.div(torch.arange(n), s, rounding_mode="floor"), torch.arange(n) % s
    d_row = qr.view(1, -1) - qr.view(-1, 1)  # [query, key]: key row - query row
    d_col = qc.view(1, -1) - qc.view(-1, 1)

    def layer_norm(x, w, bias):  # BertLayerNorm, eps inside the square root
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        return w * (x - mu) / torch.sqrt(var + 1e-12) + bias

    for i in range(RL):
        p, a = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention.self."
        if form.startswith("quadratic"):
            mu, sp = sd[a + "attention_centers"], sd[a + "attention_spreads"]
            if form == "quadratic":  # a = c = alpha^2, b = 0
                ca, cb, cc = sp**2, torch.zeros_like(sp), sp**2
            else:  # Sigma^-1 = S S^T
                inv = torch.einsum("hij,hkj->hik", sp, sp)
                ca, cb, cc = inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]
            # t_h . (dx, dy, dx^2, dy^2, dx dy) of get_heads_target_vectors
            t = -0.5 * torch.stack([-2 * (ca * mu[:, 0] + cb * mu[:, 1]), -2 * (cc * mu[:, 1] + cb * mu[:, 0]),
                                    ca, cc, 2 * cb], dim=-1)  # [H, 5]
            r = torch.stack([d_row, d_col, d_row**2, d_col**2, d_row * d_col], dim=-1).double()  # [N, N, 5]
            scores = torch.einsum("nmf,hf->hnm", r, t).unsqueeze(0).expand(b, -1, -1, -1)
        else:
            e_row, e_col = sd[a + "row_embeddings.weight"], sd[a + "col_embeddings.weight"]
            if form != "learned_2d":
                q = (h @ sd[a + "query.weight"].T + sd[a + "query.bias"]).view(b, n, RH, RD)
                k = (h @ sd[a + "key.weight"].T + sd[a + "key.bias"]).view(b, n, RH, RD)
                content = torch.einsum("bnhd,bmhd->bhnm", q, k)
            if form == "q_dot_r":  # (q.k + q[:d/2].row_emb[d_row] + q[d/2:].col_emb[d_col]) / sqrt(d)
                half = RD // 2
                pos = (torch.einsum("bnhd,nmd->bhnm", q[..., :half], e_row[d_row + RM - 1])
                       + torch.einsum("bnhd,nmd->bhnm", q[..., half:], e_col[d_col + RM - 1]))
                scores = (content + pos) / math.sqrt(RD)
            else:  # head_keys_col . col_emb scores the row offset, head_keys_row . row_emb the column offset
                pos = (torch.einsum("hd,nmd->hnm", sd[a + "head_keys_col.weight"], e_col[d_row + RM - 1])
                       + torch.einsum("hd,nmd->hnm", sd[a + "head_keys_row.weight"], e_row[d_col + RM - 1]))
                scores = pos.unsqueeze(0).expand(b, -1, -1, -1)
                if form == "u_dot_r":
                    scores = scores + content / math.sqrt(RD)
        probs = scores.softmax(-1)  # [B, H, N, N]
        ctx = torch.einsum("bhnm,bmd->bnhd", probs, h).reshape(b, n, RH * RD)
        att = ctx @ sd[a + "value.weight"].T + sd[a + "value.bias"]
        att = att @ sd[p + "attention.output.dense.weight"].T + sd[p + "attention.output.dense.bias"]
        h = layer_norm(att + h, sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"])
        mid = h @ sd[p + "intermediate.dense.weight"].T + sd[p + "intermediate.dense.bias"]
        mid = mid * 0.5 * (1.0 + torch.erf(mid / math.sqrt(2.0)))  # BERT's erf gelu
        out = mid @ sd[p + "output.dense.weight"].T + sd[p + "output.dense.bias"]
        h = layer_norm(out + h, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"])
    return h.mean(dim=1) @ sd["classifier.weight"].T + sd["classifier.bias"]


@pytest.mark.parametrize("form", list(REF_FORMS))
def test_matches_the_reference_formulas_through_its_state_dict(form):
    gen = torch.Generator().manual_seed(11)
    sd = reference_state_dict(form, gen)
    m = architectures.create_model("conv_attention", num_classes=RK, in_chans=RC, img_size=RIMG, d_model=RD,
                                   heads=RH, n_layers=RL, dff=RF, **REF_FORMS[form]).double().eval()
    m.load_reference_state_dict(sd)
    img = torch.randn(RB, RC, RIMG, RIMG, generator=gen, dtype=torch.float64)
    want = reference_forward(sd, img, form)
    with torch.no_grad():
        got = m(img)
    assert want.std() > 0.05  # not a degenerate comparison
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_load_reference_state_dict_refuses_gaps_and_strangers():
    gen = torch.Generator().manual_seed(12)
    sd = reference_state_dict("learned_2d", gen)
    m = architectures.create_model("conv_attention", num_classes=RK, in_chans=RC, img_size=RIMG, d_model=RD,
                                   heads=RH, n_layers=RL, dff=RF, positional_encoding="learned_2d").double()
    with pytest.raises(KeyError, match="lacks"):
        m.load_reference_state_dict({k: v for k, v in sd.items() if "head_keys_row" not in k})
    with pytest.raises(KeyError, match="no counterpart"):
        m.load_reference_state_dict({**sd, "encoder.layer.0.attention.self.query.weight": torch.zeros(1)})
    small_m = {k: (v[:5] if "embeddings" in k else v) for k, v in sd.items()}  # M = 3 < side 4
    with pytest.raises(ValueError, match="offsets up to"):
        m.load_reference_state_dict(small_m)


# --- parameter counts of the paper's models (32x32x3, 10 classes, defaults) -------------------------
# From the reference code: per layer a value Linear(9*400 -> 400) after the full-width heads, BERT's
# attention output Linear(400 -> 400), two LayerNorms, FFN 400 -> 512 -> 400; embed Linear(12 -> 400);
# head Linear(400 -> 10). Quadratic adds 9 centres (2) + 9 alphas per layer (anisotropic: 9 2x2 W).
# learned_2d adds two 31 x 400 tables and u^row, u^col (9 x 400 each). + content adds Linear(400 -> 9*400)
# query and key; q_dot_r has the two tables 31 x 200 (the query's halves score rows and columns) and no
# u vectors (the paper's 29.5 M); u_dot_r keeps the content-free term (9ffaa30's use_attention_data).


@pytest.mark.parametrize("kw,published,exact", [
    ({"positional_encoding": "quadratic"}, 12.09e6, 12_086_844),
    ({"positional_encoding": "quadratic", "anisotropic": True}, 12.09e6, 12_087_006),
    ({"positional_encoding": "learned_2d"}, 12.28e6, 12_278_682),
    ({"positional_encoding": "learned_2d", "use_content": True}, 29.48e6, 29_484_282),
    ({"positional_encoding": "learned_2d", "use_content": True, "content_form": "u_dot_r"}, 29.60e6, 29_601_882),
])
def test_parameter_counts_match_the_reference(kw, published, exact):
    with torch.device("meta"):
        m = architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32, **kw)
    n = sum(p.numel() for p in m.parameters())
    assert abs(n - published) <= 0.005e6
    assert n == exact


def test_impossible_hparams_are_refused():
    with pytest.raises(ValueError, match="downsample"):
        architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=30, downsample=4)
    with pytest.raises(ValueError, match="use_content"):
        architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32, use_content=True)
    with pytest.raises(ValueError, match="content_form"):
        architectures.create_model("conv_attention", num_classes=10, in_chans=3, img_size=32,
                                   positional_encoding="learned_2d", content_form="u_dot_r")
    assert isinstance(small_model("learned_2d"), ConvAttentionNet)
