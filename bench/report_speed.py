"""``runner report`` on a big store: 10,000 finished runs and 1,000,000 metric rows.

The study is the CLI bench's (10 architectures x 10 datasets x a 10 x 10 grid, one
seed); every run gets a real run folder (run.json, attempts, 10 epochs x 10 metrics,
summary) written in the worker's format, indexed once by ``runner sync``. Its tables:
accuracy (architecture x dataset over the whole grid would mix cells, so one grid
point per table, as a paper would), an efficiency table of 4 metrics, and a table over
the whole grid (dataset x lr, one architecture and epoch count). Timed, each the median
of fresh processes: ``runner report`` with the figures drawn from nothing (30 panels),
again with every figure unchanged, tables only; against ``runner plan`` on the same
study and store (parse, expand, read the store: the floor any report stands on) and a
bare ``python -c pass``. Goal on the 2-core development machine: report <= 2 s.

    python bench/report_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cli_speed import cold, study_text  # noqa: E402

GOAL_S = 2.0
EPOCHS = 10
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "train_images_per_s",
           "peak_mem_mb", "grad_norm", "val_top5")  # 10 per epoch: 100 rows a run

TABLES = """
[[table]]
name = "accuracy"
rows = "architecture"
columns = "dataset"
where = { lr = 1e-4, epochs = 10 }

[[table]]
name = "efficiency"
rows = "architecture"
columns = "metric"
metrics = ["params", "flops", "train_images_per_s", "infer_latency_ms"]
where = { dataset = "digits0", lr = 1e-4, epochs = 10 }

[[table]]
name = "lr_sweep"
rows = "dataset"
columns = "lr"
where = { architecture = "vit0", epochs = 10 }
"""


def write_folders(d: Path) -> int:
    """A finished run folder per run, in the format workers write (runner/records/runfolder.py)."""
    from runner.commands import load
    from runner.launch.scheduler import run_json

    sel = load(d / "experiments.toml")
    rows = 0
    for i, run in enumerate(sel.runs):
        f = sel.study.runs_dir / run.id
        f.mkdir(parents=True)
        (f / "run.json").write_text(json.dumps(run_json(run, sel.study)))
        prov = {"git": {"commit": None}, "torch": {"device": "cuda:0", "gpu_model": "NVIDIA H100 80GB HBM3"}}
        (f / "attempts.jsonl").write_text(
            json.dumps({"event": "start", "attempt": 1, "time": 1.0, "pid": 1, "host": "h", "provenance": prov}) + "\n"
            + json.dumps({"event": "end", "attempt": 1, "time": 2.0, "status": "done", "reason": None}) + "\n")
        lines = []
        for e in range(1, EPOCHS + 1):
            values = {m: (i % 97) / 100 + e / 1000 + k / 10 for k, m in enumerate(METRICS)}
            lines.append(json.dumps({"attempt": 1, "epoch": e, "step": e * 10, "time": float(e), **values}))
            rows += len(values)
        (f / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (f / "summary.json").write_text(json.dumps({
            "test_acc": 0.5 + (i % 89) / 200, "test_loss": 1.0 - (i % 89) / 200, "params": 1e5 * (1 + i % 10),
            "flops": 1e7 * (1 + i % 7), "train_images_per_s": 1000.0 + i % 300, "infer_latency_ms": 2.0 + i % 5}))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    runner = [sys.executable, "-m", "runner"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "experiments.toml").write_text(study_text() + TABLES)
        t0 = time.perf_counter()
        metric_rows = write_folders(d)
        t1 = time.perf_counter()
        subprocess.run([*runner, "sync"], cwd=d, check=True, capture_output=True)
        t2 = time.perf_counter()
        print(f"10,000 run folders with {metric_rows:,} metric rows written in {t1 - t0:.1f} s, "
              f"indexed by `runner sync` in {t2 - t1:.1f} s")
        figures_dir = d / "results" / "report" / "figures"
        python = cold([sys.executable, "-c", "pass"], d, args.repeat)
        plan = cold([*runner, "plan"], d, args.repeat)
        rows = {
            "runner report (figures drawn from nothing)": cold(
                [*runner, "report"], d, args.repeat, before=lambda: shutil.rmtree(figures_dir, ignore_errors=True)),
            "runner report (figures unchanged)": cold([*runner, "report"], d, args.repeat),
            "runner report --no-figures": cold([*runner, "report", "--no-figures"], d, args.repeat),
        }
        drawn = len(list(figures_dir.glob("*.png")))
        print(f"median of {args.repeat} fresh processes; {drawn} figure panels; references: `python -c pass` "
              f"{python:.3f} s, `runner plan` {plan:.3f} s (same study and store)")
        print(f"{'command':<46}{'seconds':>9}{'x plan':>8}  verdict (goal <= {GOAL_S:.0f} s)")
        for name, seconds in rows.items():
            verdict = "meets goal" if seconds <= GOAL_S else "MISSES goal"
            print(f"{name:<46}{seconds:>9.3f}{seconds / plan:>8.2f}  {verdict}")


if __name__ == "__main__":
    main()
