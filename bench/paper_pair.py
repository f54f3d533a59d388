"""The dual-attention paper's CIFAR pair (its ViT and its DAT, as ``experiments.toml`` declares
them) on synthetic CIFAR-shaped data: does bf16 + ``torch.compile`` keep each model's function,
and how much faster does it train than fp32 eager?

For each model, in this process:

* agreement: the logits of one batch under bf16 autocast (eager and compiled) against the fp32
  eager logits of the same weights, as the largest difference over the logits' spread (std);
  bf16 keeps 8 bits of mantissa, so a few 1e-2 is its tolerance;
* speed: training images/s (forward, backward, the recipe's optimizer step) of fp32 eager and of
  bf16 + compile, the median over rounds, and their ratio.

Meant for a GPU; on CPU it runs a tiny batch (a smoke check, no speed claim).

    python bench/paper_pair.py [--batch 128] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib
from pathlib import Path

import torch
from torch import nn

import architectures
from runner.study.recipe import Recipe
from runner.train.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
PAIR = ("dat_vit_cifar", "dat_cifar")


def study_architecture(name: str) -> dict:
    """An ``[architectures.NAME]`` block of the shipped study (hparams with ``model``)."""
    return dict(tomllib.loads((ROOT / "experiments.toml").read_text())["architectures"][name])


def build(name: str, device: torch.device) -> nn.Module:
    hp = study_architecture(name)
    model = hp.pop("model")
    return architectures.create_model(model, num_classes=10, in_chans=3, img_size=32, **hp).to(device)


def agreement(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        ref = model(x).float()
        spread = ref.std().item()
        out = {}
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out["bf16 eager"] = (model(x).float() - ref).abs().max().item() / spread
            if x.is_cuda:
                compiled = torch.compile(model)
                out["bf16 compiled"] = (compiled(x).float() - ref).abs().max().item() / spread
    return out


def images_per_s(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool, steps: int, rounds: int) -> float:
    model.train()
    opt = make_optimizer(model, Recipe(optimizer="adam", lr=1e-3, weight_decay=5e-5), fused=x.is_cuda)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up, compilation included
        step()
    times = []
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - t0) / steps)
    return x.shape[0] / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="the paper's batch size")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, steps, rounds = (args.batch, args.steps, args.rounds) if device.type == "cuda" else (8, 2, 1)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    name_of = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name_of}, batch {batch}, torch {torch.__version__}")
    for name in PAIR:
        torch.manual_seed(0)
        model = build(name, device)
        params = sum(p.numel() for p in model.parameters())
        diffs = agreement(model, x)
        line = ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
        verdict = "ok" if max(diffs.values()) < 0.05 else "DIFFERS"
        print(f"{name} ({params:,} params): max |bf16 - fp32| / std(logits): {line}: {verdict} (tolerance 5e-2)")
        fp32 = images_per_s(build(name, device), x, y, bf16=False, steps=steps, rounds=rounds)
        fast = build(name, device)
        if device.type == "cuda":
            fast = torch.compile(fast)
        bf16 = images_per_s(fast, x, y, bf16=True, steps=steps, rounds=rounds)
        fast_name = "bf16 + compile" if device.type == "cuda" else "bf16 eager (CPU: no compile)"
        print(f"{name}: training images/s fp32 eager {fp32:,.0f}, {fast_name} {bf16:,.0f}: {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
