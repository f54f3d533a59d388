"""Every registered architecture gets the same checks at the study's geometries; reference
parameter counts of the baselines. Family-specific equation tests live in test_<family>.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import architectures

GEOMETRIES = [(1, 8), (1, 28), (3, 32), (3, 64)]
PATCH = {8: 2, 28: 7, 32: 4, 64: 8, 224: 16}


def small(name: str, img: int) -> dict:
    """A small configuration of each family that fits the image size (CPU-fast)."""
    return {
        "vit": {"patch_size": PATCH[img], "dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64},
        "dual_attention": {"patch_size": PATCH[img], "d_model": 32, "n_layers": 2, "sa": 2, "ra": 2, "dff": 64},
        "san_pairwise": {"widths": [32, 32, 64, 64, 64], "stem_width": 16},
        "san_patchwise": {"widths": [32, 32, 64, 64, 64], "stem_width": 16},
        "conv_attention": {"d_model": 32, "n_layers": 2, "heads": 4, "dff": 64,
                           "downsample": {8: 2, 28: 2, 32: 2, 64: 4, 224: 16}[img]},
        "resnet18_cifar": {"width": 8},
        "resnet34_cifar": {"width": 8},
    }[name]


def build(name, in_chans, img, seed=0, num_classes=7):
    hp = small(name, img)
    family = architectures.get_family(name)
    assert family.hparams(**hp).check(img_size=img, in_chans=in_chans, num_classes=num_classes) is None
    torch.manual_seed(seed)
    return architectures.create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img, **hp)


@pytest.mark.parametrize("name", architectures.list_models())
@pytest.mark.parametrize("in_chans,img", GEOMETRIES, ids=[f"{c}x{s}x{s}" for c, s in GEOMETRIES])
def test_forward_backward_every_parameter_learns(name, in_chans, img):
    model = build(name, in_chans, img)
    out = model(torch.randn(2, in_chans, img, img))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not no_grad, no_grad


@pytest.mark.parametrize("name", architectures.list_models())
def test_imagenet_geometry_forward(name):
    model = build(name, 3, 224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 7)


@pytest.mark.parametrize("name", architectures.list_models())
def test_same_seed_same_weights_and_output(name):
    a, b, c = build(name, 3, 32, seed=1).eval(), build(name, 3, 32, seed=1).eval(), build(name, 3, 32, seed=2)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), na
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def count(name, **hp):
    m = architectures.create_model(name, num_classes=10, in_chans=3, img_size=32, **hp)
    return sum(p.numel() for p in m.parameters())


def test_vit_matches_timm_parameter_count():
    """Seed 004's ViT (image 32, patch 4, dim 256, depth 12, heads 8, MLP 512, 10 classes)."""
    import timm

    ours = count("vit", patch_size=4, dim=256, depth=12, heads=8, mlp_dim=512)
    theirs = timm.models.VisionTransformer(img_size=32, patch_size=4, embed_dim=256, depth=12, num_heads=8,
                                           mlp_ratio=2.0, num_classes=10)
    assert ours == sum(p.numel() for p in theirs.parameters()) == 6_357_770
    assert count("vit", patch_size=4, dim=256, depth=12, heads=8, mlp_dim=None, mlp_ratio=2.0) == ours


def test_vit_computes_what_timms_vision_transformer_computes():
    """A timm ``VisionTransformer``'s weights loaded into ``vit`` (through the documented key map)
    give timm's logits to float64 precision, and ``vit``'s own init is timm's: the class token
    N(0, 1e-6), pos_embed trunc-normal(0.02), linear biases zero, LayerNorm eps 1e-6."""
    import timm

    from architectures.vit.model import from_timm_state_dict

    torch.manual_seed(0)
    theirs = timm.models.VisionTransformer(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4,
                                           mlp_ratio=2.0, num_classes=7).double().eval()
    with torch.no_grad():  # timm's init leaves biases at zero; make every parameter matter
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = architectures.create_model("vit", num_classes=7, in_chans=3, img_size=16, patch_size=4, dim=32, depth=2,
                                      heads=4, mlp_dim=64).double().eval()
    ours.load_state_dict(from_timm_state_dict(theirs.state_dict()), strict=True)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    assert (ours(x) - theirs(x)).abs().max().item() < 1e-6
    assert all(m.eps == 1e-6 for m in ours.modules() if isinstance(m, torch.nn.LayerNorm))

    fresh = architectures.create_model("vit", num_classes=7, in_chans=3, img_size=16, patch_size=4, dim=32, depth=2,
                                       heads=4, mlp_dim=64)
    assert fresh.cls_token.abs().max().item() < 1e-4
    assert 0.01 < fresh.pos_embed.std().item() < 0.03
    assert all(m.bias.abs().max().item() == 0 for m in fresh.modules() if isinstance(m, torch.nn.Linear))
    old = architectures.create_model("vit", num_classes=7, in_chans=3, img_size=16, patch_size=4, dim=32, depth=2,
                                     heads=4, mlp_dim=64, init_scheme="trunc_normal", norm_eps=1e-5)
    assert 0.005 < old.cls_token.std().item() < 0.04 and old.norm.eps == 1e-5


def test_vit_options():
    post = architectures.create_model("vit", num_classes=3, in_chans=1, img_size=8, patch_size=4, dim=8, depth=1,
                                      heads=2, mlp_dim=8, norm_first=False, activation="relu", pool="mean")
    assert isinstance(post.norm, torch.nn.Identity) and isinstance(post.blocks[0].mlp[1], torch.nn.ReLU)
    assert post(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_resnet_cifar_parameter_counts():
    assert count("resnet18_cifar") == 11_173_962
    assert count("resnet34_cifar") == 21_282_122


def test_timm_models_by_name():
    m = architectures.create_model("timm:resnet18", num_classes=5, in_chans=1, img_size=16)
    assert m(torch.randn(2, 1, 16, 16)).shape == (2, 5)
    m = architectures.create_model("timm:vit_tiny_patch16_224", num_classes=5, in_chans=3, img_size=32, patch_size=8)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_timm_pretrained_without_weights_is_a_clear_error():
    code = ("import architectures\n"
            "architectures.create_model('timm:resnet18', num_classes=5, in_chans=3, img_size=32, pretrained=True)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode != 0
    assert "pretrained weights could not be loaded" in out.stderr and "set pretrained = false" in out.stderr


def test_impossible_hparams_are_named():
    from architectures.dual_attention import DualAttentionHparams
    from architectures.vit import ViTHparams

    geo = {"img_size": 8, "in_chans": 1, "num_classes": 10}
    assert ViTHparams(dim=16, heads=3).check(**geo)[0] == "heads"
    assert ViTHparams(patch_size=3, dim=16, heads=2).check(**geo)[0] == "patch_size"
    assert ViTHparams(patch_size=4, dim=16, heads=2, in_chans=3).check(**geo)[0] == "in_chans"
    assert ViTHparams(patch_size=4, dim=16, heads=2).check(**geo) is None
    assert DualAttentionHparams(ra=0, patch_size=4).check(**geo)[0] == "ra_type"
    assert DualAttentionHparams(ra=0, ra_type="NA", symbol_type="NA", patch_size=4).check(**geo) is None
    assert DualAttentionHparams(ra_type="NA", patch_size=4).check(**geo)[0] == "ra_type"
    assert DualAttentionHparams(sa=5, ra=2, patch_size=4).check(**geo)[0] == "d_model"


def test_vit_attention_equals_the_loop_of_its_formula():
    """softmax(q k^T / sqrt(hd)) v per head, heads concatenated, then the output projection."""
    from architectures.vit.model import Attention

    torch.manual_seed(0)
    att = Attention(dim=8, heads=2, dropout=0.0).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    q, k, v = att.qkv(x).split(8, dim=-1)
    out = torch.zeros(2, 5, 8, dtype=torch.float64)
    for b in range(2):
        for h in range(2):
            s = slice(4 * h, 4 * h + 4)
            for i in range(5):
                scores = torch.stack([q[b, i, s] @ k[b, j, s] / 2.0 for j in range(5)])
                weights = torch.softmax(scores, 0)
                out[b, i, s] = sum(weights[j] * v[b, j, s] for j in range(5))
    torch.testing.assert_close(att(x), att.proj(out), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", architectures.list_models())
def test_attention_flag_matches_the_layers_a_probe_finds(name):
    """A family registered with ``attention=True`` has layers following the protocols of
    ``architectures.attention``, and a model with global attention says its token grid."""
    from architectures.attention import GlobalAttention, TokenGrid, attention_layers

    model = build(name, 3, 32)
    layers = attention_layers(model)
    assert bool(layers) == architectures.get_family(name).attention
    if any(isinstance(m, GlobalAttention) for _, m in layers):
        assert isinstance(model, TokenGrid)


def test_registries_import_without_torch():
    """``runner plan`` validates hyperparameters and dataset options through the registries alone."""
    code = ("import sys, architectures, datasets\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_shipped_timm_catalogue_is_the_pinned_timms():
    """runner plan checks timm names and keywords against catalog.json without importing timm."""
    from architectures.timm_models import catalog

    assert catalog.FILE.read_text() == catalog.text(catalog.generate()), \
        "out of date: regenerate with `python -m architectures.timm_models.catalog`"


def test_timm_names_and_keywords_are_checked_without_timm():
    from architectures.timm_models import TimmHparams

    assert TimmHparams.check_model("timm:resnet18", {"drop_rate": 0.1, "pretrained": False}) is None
    assert TimmHparams.check_model("timm:resnet18.a1_in1k", {}) is None
    assert TimmHparams.check_model("timm:vit_tiny_patch16_224", {"patch_size": 8, "drop_path_rate": 0.1}) is None
    key, message = TimmHparams.check_model("timm:resnet18x", {})
    assert key == "model" and 'has no model "resnet18x"; did you mean resnet18' in message
    key, message = TimmHparams.check_model("timm:resnet18", {"drop_rat": 0.1})
    assert key == "drop_rat" and "not a keyword of timm's resnet18" in message and "drop_rate" in message
