"""Forward + backward time per training step of our models against the reference implementations.

* ``vit`` (seed 004's configuration) against timm's ``VisionTransformer`` with the same configuration;
* ``resnet18_cifar`` against torchvision's ``resnet18`` given the same 3x3 stride-1 stem and no max-pool.

Both sides run in this process, interleaved round by round so that machine noise hits them
alike; each figure is the median over rounds, printed as ours / reference (goal <= 1.05).
On CUDA the step also runs under bf16 autocast.

    python bench/arch_speed.py [--device cpu|cuda] [--batch 64] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp: bool) -> float:
    """Seconds per forward + backward step (after the caller's warm-up)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    sync()
    return (time.perf_counter() - t0) / steps


def pairs(device: torch.device):
    import timm
    import torchvision

    import architectures

    vit = architectures.create_model("vit", num_classes=10, in_chans=3, img_size=32, patch_size=4, dim=256,
                                     depth=12, heads=8, mlp_dim=512)
    timm_vit = timm.models.VisionTransformer(img_size=32, patch_size=4, embed_dim=256, depth=12, num_heads=8,
                                             mlp_ratio=2.0, num_classes=10)
    ours_rn = architectures.create_model("resnet18_cifar", num_classes=10, in_chans=3, img_size=32)
    tv_rn = torchvision.models.resnet18(num_classes=10)
    tv_rn.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv_rn.maxpool = nn.Identity()
    for a, b in ((vit, timm_vit), (ours_rn, tv_rn)):
        assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    return [("vit vs timm VisionTransformer", vit.to(device), timm_vit.to(device)),
            ("resnet18_cifar vs torchvision resnet18", ours_rn.to(device), tv_rn.to(device))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="steps per round and side")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    modes = [False, True] if device.type == "cuda" else [False]
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward per step, batch {args.batch} of 32x32x3, median of {args.rounds} rounds; "
          f"torch {torch.__version__}, {hw}")
    print(f"{'pair':<42}{'precision':<10}{'ours ms':>9}{'ref ms':>9}{'ratio':>7}  verdict")
    for name, ours, ref in pairs(device):
        for amp in modes:
            for m in (ours, ref):  # warm-up: allocator, kernels, caches
                step_time(m, x, y, 2, amp)
            a, b = [], []
            for _ in range(args.rounds):
                a.append(step_time(ours, x, y, args.steps, amp))
                b.append(step_time(ref, x, y, args.steps, amp))
            ta, tb = statistics.median(a), statistics.median(b)
            verdict = "meets goal" if ta / tb <= 1.05 else "MISSES goal (<= 1.05)"
            print(f"{name:<42}{'bf16' if amp else 'fp32':<10}{ta * 1e3:>9.1f}{tb * 1e3:>9.1f}{ta / tb:>7.3f}  {verdict}")


if __name__ == "__main__":
    main()
