"""Scheduling, as ratios measured in one run.

* Dispatch overhead per run: the idle gap on a slot between one run's end and the next
  run's start (both read from the runs' attempts), for ``runner launch --workers 1``
  (a long-lived worker takes run after run) against ``--isolate`` (a fresh process per run:
  Python start, torch import, provenance). Real launches of tiny digits runs. Goal: the
  long-lived worker's gap at least 15x smaller.
* Makespan of a simulated mixed matrix (architectures x datasets x seeds with known run
  lengths spread over two orders of magnitude) on K slots, by greedy list scheduling in the
  launcher's order, against the lower bound max(longest run, total / K). Orders: the plan's
  (FIFO), longest first with exact lengths, and longest first with estimates off by up to
  ~1.5x either way. Goal: longest first at most 1.05 when runs are many and short relative to
  the total.

    python bench/scheduling.py [--runs 8] [--trials 50]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY_STUDY  # noqa: E402
from runner.launch.estimate import longest_first  # noqa: E402


def study_text(runs: int) -> str:
    """The tests' tiny digits study, ViT only, one epoch, ``runs`` seeds."""
    return (TINY_STUDY.replace("{epochs}", "1").replace("seeds = [0, 1]", f"seeds = {list(range(runs))}")
            .replace('architectures = ["vit", "cnn"]', 'architectures = ["vit"]'))


def dispatch_gaps(runs: int, isolate: bool) -> tuple[list[float], float]:
    """Gaps between consecutive attempts on one worker slot, and the launch's wall time."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "experiments.toml").write_text(study_text(runs))
        cmd = [sys.executable, "-m", "runner", "launch", "--workers", "1"] + (["--isolate"] if isolate else [])
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=d, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"launch failed:\n{out.stdout}\n{out.stderr}")
        spans = []
        for attempts in Path(d, "results", "runs").glob("*/attempts.jsonl"):
            events = [json.loads(line) for line in attempts.read_text().splitlines()]
            start = next(e["time"] for e in events if e["event"] == "start")
            end = next(e["time"] for e in events if e["event"] == "end")
            spans.append((start, end))
    spans.sort()
    return [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:])], wall


Job = namedtuple("Job", "id length")


def mixed_matrix(rng: random.Random) -> list[Job]:
    """6 architectures x 4 datasets x 5 seeds: cost per image x dataset size, seeds within +-10 %."""
    archs = [rng.uniform(1, 30) for _ in range(6)]
    data = [rng.choice([1, 1, 5, 10]) for _ in range(4)]
    return [Job(f"{a}-{d}-{s}", archs[a] * data[d] * rng.uniform(0.9, 1.1))
            for a in range(6) for d in range(4) for s in range(5)]


def makespan(order: list[Job], slots: int) -> float:
    """Greedy list scheduling: each run goes to the slot that frees up first."""
    free = [0.0] * slots
    for job in order:
        heapq.heapreplace(free, free[0] + job.length)
    return max(free)


def lower_bound(jobs: list[Job], slots: int) -> float:
    return max(max(j.length for j in jobs), sum(j.length for j in jobs) / slots)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8, help="tiny runs per dispatch measurement")
    p.add_argument("--trials", type=int, default=50, help="random mixed matrices per slot count")
    args = p.parse_args()

    print(f"dispatch overhead ({args.runs} one-epoch digits runs on one CPU worker; gap between runs, median):")
    reused, reused_wall = dispatch_gaps(args.runs, isolate=False)
    fresh, fresh_wall = dispatch_gaps(args.runs, isolate=True)
    r, f = statistics.median(reused), statistics.median(fresh)
    print(f"  long-lived worker  {r * 1000:8.1f} ms per run   (launch wall {reused_wall:.1f} s)")
    print(f"  fresh process      {f * 1000:8.1f} ms per run   (launch wall {fresh_wall:.1f} s)")
    print(f"  ratio fresh / long-lived: {f / r:.0f}x   (goal >= 15x)")

    rng = random.Random(0)
    print(f"\nmakespan / lower bound, {args.trials} random 120-run mixed matrices (median, worst):")
    print(f"  {'slots':>5}  {'plan order':>14}  {'longest first':>14}  {'noisy estimates':>16}")
    for slots in (2, 4, 8):
        ratios = {"fifo": [], "lpt": [], "noisy": []}
        for _ in range(args.trials):
            jobs = mixed_matrix(rng)
            bound = lower_bound(jobs, slots)
            exact = {j.id: j.length for j in jobs}
            noisy = {j.id: j.length * math.exp(rng.gauss(0, 0.2)) for j in jobs}
            ratios["fifo"].append(makespan(jobs, slots) / bound)
            ratios["lpt"].append(makespan(longest_first(jobs, exact), slots) / bound)
            ratios["noisy"].append(makespan(longest_first(jobs, noisy), slots) / bound)
        cells = [f"{statistics.median(v):.3f}, {max(v):.3f}" for v in ratios.values()]
        print(f"  {slots:>5}  {cells[0]:>14}  {cells[1]:>14}  {cells[2]:>16}")
    print("  goal: longest first <= 1.05")


if __name__ == "__main__":
    main()
