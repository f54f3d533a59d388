"""Training throughput of one run over N processes (``gpus_per_run = N``) against the same run
on one, both measured in this invocation by real ``runner launch`` calls.

Each launch trains the same study (same run id: ``gpus_per_run`` is an engine field) in its
own results folder, and the figure is the run's ``train_images_per_s`` (images of every rank
over the loop's time, evaluation excluded). The ratio is the speed-up; ideal is N.

    python bench/ddp_speed.py --gpus 2              # two GPUs: nccl
    python bench/ddp_speed.py --gpus 1 --per-gpu 2  # two ranks sharing one GPU: gloo (a check, not a speed-up)
    python bench/ddp_speed.py --workers 2           # two CPU processes: gloo

The data is digits upscaled to 32x32 pixels (no download); the default ViT is big enough
that a step is not all overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
[study]
name = "ddp-bench"
seeds = [0]

[defaults]
epochs = {epochs}
batch_size = {batch}
gpus_per_run = {ranks}
eval_every = 1000

[architectures.vit]
model = "vit"
patch_size = 4
dim = {dim}
depth = {depth}
heads = 4
mlp_dim = {mlp}

[datasets.digits]
source = "digits"
img_size = 32

[[matrix]]
name = "main"
architectures = ["vit"]
datasets = ["digits"]
"""


def launch(ranks: int, args, device_flags: list[str]) -> dict:
    """Train the bench's run with ``ranks`` processes; returns its summary and the first attempt's engine."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "experiments.toml").write_text(STUDY.format(ranks=ranks, epochs=args.epochs, batch=args.batch,
                                                            dim=args.dim, depth=args.depth, mlp=4 * args.dim))
        out = subprocess.run([sys.executable, "-m", "runner", "launch", *device_flags], cwd=d, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            raise SystemExit(f"launch with {ranks} process(es) failed:\n{out.stdout}\n{out.stderr}")
        (folder,) = [p for p in Path(d, "results", "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
        summary = json.loads((folder / "summary.json").read_text())
        events = [json.loads(line) for line in (folder / "attempts.jsonl").read_text().splitlines()]
        engine = next(e["engine"] for e in events if e["event"] == "engine")
        return {"summary": summary, "engine": engine}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", help="as runner launch --gpus (default: CPU workers)")
    p.add_argument("--per-gpu", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="CPU processes (without --gpus)")
    p.add_argument("--ranks", type=int, default=None, help="processes of the distributed run (default: all slots)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    args = p.parse_args()
    if args.gpus:
        slots = (int(args.gpus) if args.gpus.isdigit() else len(args.gpus.split(","))) * args.per_gpu
        flags = ["--gpus", args.gpus, "--per-gpu", str(args.per_gpu)]
        single = ["--gpus", args.gpus.split(",")[0] if not args.gpus.isdigit() else "1"]
    else:
        slots, flags, single = args.workers, ["--workers", str(args.workers)], ["--workers", "1"]
    ranks = args.ranks or slots
    one = launch(1, args, single)
    many = launch(ranks, args, flags)
    a, b = one["summary"]["train_images_per_s"], many["summary"]["train_images_per_s"]
    print(f"device: {one['summary']['device']}; model ViT dim {args.dim} depth {args.depth}, global batch {args.batch}, "
          f"{args.epochs} epochs of {one['summary']['n_train']} images")
    print(f"1 process:  {a:10.1f} images/s")
    print(f"{ranks} processes: {b:10.1f} images/s  ({many['engine']['ddp_backend']}, "
          f"{many['engine']['batch_per_process']} images per process and step)")
    print(f"speed-up: {b / a:.2f}x of an ideal {ranks}x")


if __name__ == "__main__":
    main()
