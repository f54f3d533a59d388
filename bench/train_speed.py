"""Training-loop speed, as ratios measured in one run.

* loop overhead (any device; the CPU figure is the goal here): the engine's time per optimizer
  step (``runner.train.loop.train``: schedule, accumulation bookkeeping, divergence checks, stop
  polling, metrics) against a bare ``forward / backward / step`` loop over the very same batches
  in the same process. Goal: at most 1.05.
* GPU speed-up (only where CUDA is visible): train images/s of a ViT and a ResNet on
  CIFAR-shaped data (50,000 images written as the real CIFAR-10 pickles), the textbook set-up
  (eager fp32, DataLoader with workers) against the engine's fast one (bf16 autocast,
  torch.compile, GPU-resident batches, fused AdamW, channels_last for the ResNet). Goal: >= 3x.

Figures are medians over epochs after the first (compilation and warm-up are left out), with
the hardware and versions printed next to them.

    python bench/train_speed.py [--repeats 5] [--gpu-epochs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-format CIFAR writer of the test fixtures

STUDY = """
[study]
name = "bench"
seeds = [0]

[defaults]
{defaults}

[architectures.vit]          # the study's CIFAR ViT (seed 004): patch 4, dim 256, 12 layers
model = "vit"
patch_size = 4
dim = 256
depth = 12
heads = 8
mlp_dim = 512

[architectures.resnet]
model = "resnet18_cifar"

[architectures.vit_tiny]
model = "vit"
patch_size = 4
dim = 32
depth = 2
heads = 2
mlp_dim = 64

[architectures.cnn_small]
model = "resnet18_cifar"
width = 8

[datasets.cifar10]
source = "cifar10"
root = "{root}"

[datasets.digits]
source = "digits"

[[matrix]]
name = "all"
architectures = ["vit", "resnet", "vit_tiny", "cnn_small"]
datasets = ["cifar10", "digits"]
"""


def resolved(architecture: str, dataset: str, root: str = ".", **recipe) -> dict:
    """A config as the plan resolves it."""
    import json

    from runner.plan.expand import expand
    from runner.study.spec import load_study

    text = STUDY.replace("{defaults}", "".join(f"{k} = {json.dumps(v)}\n" for k, v in recipe.items()))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "experiments.toml").write_text(text.replace("{root}", root))
        runs = expand(load_study(Path(d) / "experiments.toml")).runs
    return next(r.config for r in runs if r.architecture == architecture and r.dataset == dataset)


def engine_images_per_s(config: dict, device: str) -> list[float]:
    """Train images/s of each epoch after the first, as the engine measures and logs them."""
    from runner.train.loop import train

    rates: list[float] = []
    train(config, device=device, on_epoch=lambda e, s, m: rates.append(m["train_images_per_s"]) if e > 1 else None)
    return rates


def bare_images_per_s(config: dict, device: str) -> list[float]:
    """The same model, optimizer and batches in the plainest loop there is."""
    from datasets.batches import make_batches
    from runner.train.optim import make_optimizer
    from runner.study.recipe import Recipe
    from runner.train.loop import build_model, load_split, seed_everything

    r, dev = Recipe(**config["train"]), torch.device(device)
    seed_everything(config["seed"])
    data, info = load_split(config["dataset"], "train")
    batches = make_batches(data, r.batch_size, dev, shuffle=True, seed=config["seed"], augmentation=r.augmentation(),
                           path=r.data_path)
    model = build_model(config["architecture"], info).to(dev)
    opt = make_optimizer(model, r)
    rates = []
    for epoch in range(1, r.epochs + 1):
        model.train()
        batches.set_epoch(epoch)
        n, t0 = 0, time.perf_counter()
        for x, y in batches:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if epoch > 1:
            rates.append(n / (time.perf_counter() - t0))
    return rates


def loop_overhead(device: str, repeats: int) -> None:
    print(f"\nloop overhead on {device}: engine time per step / bare loop time per step "
          f"(digits, batch 64, fp32, median of {repeats} interleaved repeats x 4 epochs; goal <= 1.05)")
    print(f"{'model':<12}{'bare img/s':>14}{'engine img/s':>14}{'ratio':>8}")
    for arch in ("vit_tiny", "cnn_small"):
        config = resolved(arch, "digits", epochs=5, batch_size=64, precision="fp32", data_path="device")
        engine, bare = [], []
        for _ in range(repeats):  # interleaved, so drifts of the machine hit both alike
            bare += bare_images_per_s(config, device)
            engine += engine_images_per_s(config, device)
        b, e = statistics.median(bare), statistics.median(engine)
        print(f"{arch:<12}{b:>14,.0f}{e:>14,.0f}{b / e:>8.3f}")


def gpu_speedup(epochs: int) -> None:
    from data_fixtures import write_cifar10

    with tempfile.TemporaryDirectory() as d:
        write_cifar10(Path(d), per_class_per_batch=1000, test_per_class=1000)  # 50,000 + 10,000 images
        print(f"\nGPU speed-up, CIFAR-shaped data (50,000 train images, pad-crop + flip, batch 256), median "
              f"train images/s of epochs 2..{epochs}; goal >= 3x")
        print(f"{'model':<8}{'eager fp32 + DataLoader':>26}{'bf16 + compile + device data':>30}{'ratio':>8}")
        common = dict(epochs=epochs, batch_size=256, crop="pad", hflip=0.5)
        for arch in ("vit", "resnet"):
            slow = resolved(arch, "cifar10", d, precision="fp32", compile=False, data_path="loader",
                            channels_last=False, fused=False, **common)
            fast = resolved(arch, "cifar10", d, precision="bf16", compile=True, data_path="device", **common)
            a = statistics.median(engine_images_per_s(slow, "cuda"))
            b = statistics.median(engine_images_per_s(fast, "cuda"))
            print(f"{arch:<8}{a:>26,.0f}{b:>30,.0f}{b / a:>7.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gpu-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (a CPU worker runs with one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    hw = torch.cuda.get_device_name(0) if cuda else f"no CUDA device; CPU, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {hw}, {args.threads} CPU thread(s)")
    loop_overhead("cpu", args.repeats)
    if cuda:
        loop_overhead("cuda", args.repeats)
        gpu_speedup(args.gpu_epochs)
    else:
        print("\nGPU speed-up: not measured, no CUDA device visible")


if __name__ == "__main__":
    main()
