"""The README's demo: the study file's `demo` matrix trains for real and prints the accuracy table."""

from __future__ import annotations

import re
import shutil

from conftest import ROOT, run_cli


def test_demo_matrix_runs_and_reports(tmp_path):
    shutil.copy(ROOT / "experiments.toml", tmp_path / "experiments.toml")
    plan = run_cli("plan", "--matrix", "demo", cwd=tmp_path)
    assert "6 missing" in plan.stdout, plan.stdout
    launch = run_cli("launch", "--matrix", "demo", cwd=tmp_path, timeout=900)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    assert "6 done, 0 failed" in launch.stdout
    report = run_cli("report", "--table", "demo_accuracy", cwd=tmp_path)
    rows = dict(re.findall(r"^\| (\w+) \| (?:\*\*)?([\d.]+) ± [\d.]+(?:\*\*)? \|$", report.stdout, flags=re.M))
    assert set(rows) == {"vit_tiny", "resnet18_narrow"}, report.stdout
    # the figures the README quotes: a small CNN near 98 %, a small ViT near 95 % on digits
    assert float(rows["resnet18_narrow"]) > 95.0 and float(rows["vit_tiny"]) > 88.0, report.stdout
    assert "nothing to run" in run_cli("launch", "--matrix", "demo", cwd=tmp_path).stdout
