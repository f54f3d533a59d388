"""A study whose run folders hold known numbers, written in the worker's format (no training),
so the report's means, standard deviations, bolding and marks can be checked by hand.

    architecture x dataset   seeds done   test_acc                 test_loss           hardware
    vit   / digits           0, 1, 2      0.90 0.92 0.94            0.30 0.20 0.40      cpu
    cnn   / digits           0, 1 (2 failed) 0.95 0.97              0.10 0.20           cpu
    deep  / digits           none                                                       
    vit   / small            0, 1, 2      0.50 0.60 0.70            0.9 0.8 0.7         A100, H100, H100
    cnn   / small            0, 1, 2      0.80 0.80 0.80            0.5 0.5 0.5         cpu
    deep  / small            0            (no test_acc)             0.6                 cpu

vit/digits logs val_acc per epoch: seeds 0, 1, 2 give [0.5, 0.8], [0.6, 0.8], [0.7, 0.8].
"""

from __future__ import annotations

from pathlib import Path

from conftest import write_study
from studies import CNN, DIGITS, VIT, study_toml

STUDY = study_toml(
    "known", seeds=[0, 1, 2], defaults={},
    architectures={"vit": VIT, "cnn": CNN, "deep": VIT | {"depth": 2}},
    datasets={"digits": DIGITS, "small": DIGITS | {"subset": 20}},
    tables=[{"name": "accuracy", "title": "Test accuracy (%)", "where": {"matrix": "main"}},
            {"name": "splits", "title": "Loss and accuracy on digits", "rows": ["architecture", "dataset"],
             "columns": "metric", "metrics": ["test_loss", "test_acc"], "where": {"dataset": "digits"}},
            {"name": "loss_median", "title": "Median test loss", "metric": "test_loss", "aggregate": "median",
             "decimals": 2}])

KNOWN = {  # (architecture, dataset) -> per seed: (summary or "failed", gpu model or None)
    ("vit", "digits"): [({"test_acc": 0.90, "test_loss": 0.30}, None), ({"test_acc": 0.92, "test_loss": 0.20}, None),
                        ({"test_acc": 0.94, "test_loss": 0.40}, None)],
    ("cnn", "digits"): [({"test_acc": 0.95, "test_loss": 0.10}, None), ({"test_acc": 0.97, "test_loss": 0.20}, None),
                        ("failed", None)],
    ("vit", "small"): [({"test_acc": 0.50, "test_loss": 0.9}, "NVIDIA A100-SXM4-80GB"),
                       ({"test_acc": 0.60, "test_loss": 0.8}, "NVIDIA H100 80GB HBM3"),
                       ({"test_acc": 0.70, "test_loss": 0.7}, "NVIDIA H100 80GB HBM3")],
    ("cnn", "small"): [({"test_acc": 0.80, "test_loss": 0.5}, None)] * 3,
    ("deep", "small"): [({"test_loss": 0.6}, None)],
}
CURVES = {0: [0.5, 0.8], 1: [0.6, 0.8], 2: [0.7, 0.8]}  # vit/digits: val_acc per epoch, by seed


def write_run(study, run, summary, *, gpu: str | None = None, commit: str | None = None,
              curve: list[float] | None = None) -> None:
    """One run folder as a worker leaves it: an attempt with provenance, metric lines, the done
    (or failed) mark."""
    from runner.records.runfolder import RunFolder
    from runner.launch.scheduler import run_json

    f = RunFolder(study.runs_dir / run.id)
    f.create(run_json(run, study))
    device = "cuda:0" if gpu else "cpu"
    attempt = f.start_attempt({"torch": {"device": device, "gpu_model": gpu}, "git": {"commit": commit}})
    for epoch, value in enumerate(curve or [], 1):
        f.log_metrics(attempt, epoch, epoch * 10, {"val_acc": value, "val_loss": 1 - value})
    if summary == "failed":
        f.fail(attempt, "RuntimeError: boom", "Traceback: boom")
    else:
        f.finish(attempt, summary)


def known_study(path: Path, *, commit: str | None = None, text: str = STUDY) -> Path:
    """Write the study and its known run folders into ``path``; returns the study file."""
    from runner.commands import load

    study_file = write_study(path, text)
    sel = load(study_file)
    for run in sel.runs:
        seeds = KNOWN.get((run.architecture, run.dataset), [])
        if run.seed < len(seeds):
            summary, gpu = seeds[run.seed]
            curve = CURVES[run.seed] if (run.architecture, run.dataset) == ("vit", "digits") else None
            write_run(sel.study, run, summary, gpu=gpu, commit=commit, curve=curve)
    return study_file
