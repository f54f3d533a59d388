"""Cold wall time of the commands a researcher types most: ``runner --help`` and ``runner plan``.

``plan`` runs on a generated study of 10,000 cells (10 architectures x 10 datasets
x a 10 x 10 grid, one seed), once with no store and once against a store that
already indexes all 10,000 runs. Each figure is the median of several fresh
processes, printed next to the cold start of a bare ``python -c pass`` measured
in the same run. Goals on the 2-core development machine: --help <= 0.3 s,
plan <= 1 s.

    python bench/cli_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS = {"runner --help": 0.3, "runner plan (no store)": 1.0, "runner plan (10,000 runs in the store)": 1.0}


def study_text(n_arch: int = 10, n_data: int = 10, n_lr: int = 10, n_epochs: int = 10) -> str:
    lines = ['[study]\nname = "bench"\nseeds = [0]\n', "[defaults]\nepochs = 10\n"]
    for a in range(n_arch):
        lines.append(f'[architectures.vit{a}]\nmodel = "vit"\npatch_size = 2\ndim = 32\ndepth = {a + 1}\nheads = 4\nmlp_dim = 64\n')
    for d in range(n_data):
        lines.append(f'[datasets.digits{d}]\nsource = "digits"\nsubset = {d + 1}\n')
    lrs = ", ".join(f"{(i + 1) * 1e-4:.1e}" for i in range(n_lr))
    epochs = ", ".join(str(e + 1) for e in range(n_epochs))
    archs = ", ".join(f'"vit{a}"' for a in range(n_arch))
    data = ", ".join(f'"digits{d}"' for d in range(n_data))
    lines.append(f'[[matrix]]\nname = "big"\narchitectures = [{archs}]\ndatasets = [{data}]\n'
                 f'grid = {{ lr = [{lrs}], epochs = [{epochs}] }}\n')
    return "\n".join(lines)


def cold(cmd: list[str], cwd: Path, repeat: int, before=None) -> float:
    """Median wall time of ``cmd`` in fresh processes; ``before()`` runs untimed ahead of each."""
    times = []
    for _ in range(repeat):
        if before:
            before()
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return statistics.median(times)


def fill_store(d: Path) -> int:
    """Index every run of the study as done, straight into the store (folders are not needed to time plan)."""
    from runner.commands import load, open_store
    from runner.records.tables import runs_table

    sel = load(d / "experiments.toml")
    store = open_store(sel.study, create=True)
    rows = [dict(id=r.id, cell=r.cell, label=r.label, study="bench", matrices=list(r.matrices), config=r.config,
                 state="done", summary={"test_acc": 0.5}, attempts=1, folder=str(sel.study.runs_dir / r.id))
            for r in sel.runs]
    with store.engine.begin() as conn:
        conn.execute(runs_table.insert(), rows)
    store.engine.dispose()
    return len(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    runner = [sys.executable, "-m", "runner"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "experiments.toml").write_text(study_text())
        python = cold([sys.executable, "-c", "pass"], d, args.repeat)
        figures = {"runner --help": cold([*runner, "--help"], d, args.repeat),
                   "runner plan (no store)": cold([*runner, "plan"], d, args.repeat)}
        n = fill_store(d)
        assert n == 10_000, n
        figures["runner plan (10,000 runs in the store)"] = cold([*runner, "plan"], d, args.repeat)

    print(f"cold wall time, median of {args.repeat} fresh processes; reference `python -c pass` = {python:.3f} s")
    print(f"{'command':<42}{'seconds':>9}{'goal':>8}{'x python':>10}  verdict")
    for name, seconds in figures.items():
        verdict = "meets goal" if seconds <= GOALS[name] else "MISSES goal"
        print(f"{name:<42}{seconds:>9.3f}{GOALS[name]:>8.1f}{seconds / python:>10.1f}  {verdict}")


if __name__ == "__main__":
    main()
