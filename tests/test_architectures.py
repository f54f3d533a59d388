"""Every registered architecture gets the same checks; parameter counts match the papers' references."""

from __future__ import annotations

import pytest
import torch

import architectures
from architectures.hparams import ViTHparams


@pytest.mark.parametrize("name", architectures.list_models())
@pytest.mark.parametrize("in_chans,img_size", [(1, 8), (3, 32)])
def test_forward_backward(name, in_chans, img_size):
    torch.manual_seed(0)
    small = {"vit": {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "patch_size": 4}, "resnet18_cifar": {"width": 8}}
    model = architectures.create_model(name, num_classes=7, in_chans=in_chans, img_size=img_size, **small[name])
    x = torch.randn(3, in_chans, img_size, img_size)
    out = model(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_vit_matches_timm_parameter_count():
    """Seed 004's ViT (image 32, patch 4, dim 256, depth 12, heads 8, MLP 512, 10 classes)."""
    m = architectures.create_model("vit", num_classes=10, in_chans=3, img_size=32, patch_size=4, dim=256, depth=12,
                                   heads=8, mlp_dim=512)
    assert sum(p.numel() for p in m.parameters()) == 6_357_770


def test_vit_mean_pool_uses_every_token():
    m = architectures.create_model("vit", num_classes=2, in_chans=1, img_size=8, patch_size=4, dim=8, depth=1,
                                   heads=2, mlp_dim=8, pool="mean")
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 2)


def test_resnet18_cifar_parameter_count():
    m = architectures.create_model("resnet18_cifar", num_classes=10, in_chans=3, img_size=32)
    assert sum(p.numel() for p in m.parameters()) == 11_173_962


def test_timm_models_by_name():
    m = architectures.create_model("timm:resnet18", num_classes=5, in_chans=1, img_size=16)
    assert m(torch.randn(2, 1, 16, 16)).shape == (2, 5)
    m = architectures.create_model("timm:vit_tiny_patch16_224", num_classes=5, in_chans=3, img_size=32, patch_size=8)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_impossible_hparams_are_named():
    assert ViTHparams(dim=16, heads=3).check(img_size=8, in_chans=1, num_classes=10)[0] == "heads"
    assert ViTHparams(patch_size=3, dim=16, heads=2).check(img_size=8, in_chans=1, num_classes=10)[0] == "patch_size"
    assert ViTHparams(patch_size=4, dim=16, heads=2).check(img_size=8, in_chans=1, num_classes=10) is None
