"""Run-length estimates rank runs so that the longest starts first (runner/launch/estimate.py)."""

from __future__ import annotations

import torch

from conftest import write_study
from runner import commands
from runner.launch.estimate import expected_seconds, images_to_train, longest_first, meta_flops
from runner.train.measure import count_flops
from runner.train.loop import build_model


def tiny_runs(tmp_path, epochs: int = 2):
    write_study(tmp_path, epochs=epochs)
    return commands.load(tmp_path / "experiments.toml").runs


def by_arch(runs, arch: str):
    return [r for r in runs if r.architecture == arch]


def test_flops_counted_on_the_meta_device_match_a_real_model(tmp_path):
    import datasets

    run = by_arch(tiny_runs(tmp_path), "vit")[0]
    options = dict(run.config["dataset"])
    info = datasets.get_source(options.pop("source")).options(**options).info()
    real = count_flops(build_model(run.config["architecture"], info), torch.zeros(1, 1, 8, 8))
    assert real and meta_flops(run.config["architecture"], run.config["dataset"]) == real


def test_without_history_the_run_with_more_work_goes_first(tmp_path):
    runs = tiny_runs(tmp_path)
    expected = expected_seconds(runs, history=[])
    cnn, vit = by_arch(runs, "cnn")[0], by_arch(runs, "vit")[0]
    assert expected[cnn.id] > expected[vit.id]  # the ResNet costs ~100x the tiny ViT per image
    assert [r.architecture for r in longest_first(runs, expected)] == ["cnn", "cnn", "vit", "vit"]


def test_a_cell_that_ran_before_is_estimated_from_its_own_history(tmp_path):
    """Measured times beat FLOPs: here the small ViT turned out the slow one."""
    runs = tiny_runs(tmp_path)
    vit, cnn = by_arch(runs, "vit")[0], by_arch(runs, "cnn")[0]
    history = [{"cell": vit.cell, "config": vit.config, "summary": {}, "seconds": 500.0},
               {"cell": vit.cell, "config": vit.config, "summary": {}, "seconds": 300.0},
               {"cell": cnn.cell, "config": cnn.config, "summary": {}, "seconds": 20.0}]
    expected = expected_seconds(runs, history)
    assert expected[vit.id] == 400.0 and expected[cnn.id] == 20.0
    assert [r.architecture for r in longest_first(runs, expected)] == ["vit", "vit", "cnn", "cnn"]


def test_a_new_cell_is_scaled_from_finished_runs_of_its_model(tmp_path):
    """Twice the epochs of a finished cell: about twice its time (the rate is fitted on it)."""
    short, long_ = tiny_runs(tmp_path / "short", epochs=2), tiny_runs(tmp_path / "long", epochs=4)
    done = by_arch(short, "cnn")[0]
    flops = meta_flops(done.config["architecture"], done.config["dataset"])
    history = [{"cell": done.cell, "config": done.config, "seconds": 10.0,
                "summary": {"flops": flops, "steps": 20, "epochs": 2, "n_train": images_to_train(done.config) // 2}}]
    expected = expected_seconds(by_arch(long_, "cnn"), history)
    assert all(abs(v - 20.0) < 1e-6 for v in expected.values())


def test_unknown_lengths_rank_as_the_median_and_ties_keep_the_plan_order(tmp_path):
    runs = tiny_runs(tmp_path)
    a, b, c, d = runs
    ordered = longest_first(runs, {a.id: 1.0, b.id: None, c.id: 5.0, d.id: 3.0})
    assert ordered == [c, b, d, a]  # b counts as the median, 3.0, and comes before d as in the plan
