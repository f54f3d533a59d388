"""The training loop: reproducible under a seed, a summary of exactly the declared keys (the design's metric names among them)."""

from __future__ import annotations

import copy

import pytest
import torch

from runner.records.summary import SUMMARY_METRICS, Summary
from runner.study.recipe import Recipe
from runner.train.loop import Interrupted, train
from runner.train.optim import lr_at


def _resolved_config() -> dict:
    """A config exactly as the plan resolves it (every default filled in), so seams show."""
    import tempfile
    from pathlib import Path

    from conftest import write_study
    from runner.plan.expand import expand
    from runner.study.spec import load_study

    with tempfile.TemporaryDirectory() as d:
        plan = expand(load_study(write_study(Path(d), epochs=3)))
    return next(r.config for r in plan.runs if r.architecture == "vit" and r.seed == 0)


CONFIG = _resolved_config()
# design.md, "The store": the summary metrics every run records, which tables and bars rely on
DESIGN_NAMES = {"test_acc", "test_loss", "best_val_acc", "val_acc", "val_loss", "train_acc", "train_loss", "epochs",
                "params", "flops", "train_time_s", "train_images_per_s", "infer_images_per_s", "infer_latency_ms",
                "peak_mem_mb"}


def test_summary_has_exactly_the_declared_keys_and_learns(tmp_path):
    torch.set_num_threads(1)
    epochs = []
    s = train(CONFIG, on_epoch=lambda e, step, m: epochs.append((e, step, m)), weights=tmp_path / "model.pt")
    assert set(s) == Summary.__required_keys__  # what train writes is what runner/records/summary.py declares
    assert DESIGN_NAMES <= set(SUMMARY_METRICS)
    assert all(isinstance(s[k], (int, float)) for k in SUMMARY_METRICS)
    assert 0.0 <= s["test_acc"] <= 1.0 and s["test_acc"] > 0.3  # well above chance (0.1) after 3 epochs
    assert s["params"] == sum(p.numel() for p in torch.load(tmp_path / "model.pt", weights_only=True).values())
    assert s["flops"] > 0 and s["epochs"] == 3
    assert [e for e, _, _ in epochs] == [1, 2, 3] and epochs[-1][1] == s["steps"]
    assert {"train_loss", "val_acc", "lr", "epoch_time_s"} <= set(epochs[0][2])


def test_same_seed_same_result_other_seed_other_result():
    torch.set_num_threads(1)
    a, b = train(CONFIG), train(CONFIG)
    c = train({**copy.deepcopy(CONFIG), "seed": 1})
    assert a["test_loss"] == b["test_loss"] and a["val_acc"] == b["val_acc"]
    assert c["test_loss"] != a["test_loss"]


def test_stop_request_interrupts():
    with pytest.raises(Interrupted):
        train(CONFIG, should_stop=lambda: True)


def test_schedule_warms_up_then_decays_to_min_lr():
    r = Recipe(lr=1.0, min_lr=0.1)
    at = lambda step: lr_at(step, r, total_steps=100, warmup_steps=10, steps_per_epoch=10)  # noqa: E731
    assert at(0) == pytest.approx(0.1)
    assert at(9) == pytest.approx(1.0)
    assert at(100) == pytest.approx(0.1)
    assert at(55) == pytest.approx(0.55)


def _every_family_study(tmp_path):
    import architectures
    from test_architectures import small

    from conftest import write_study
    from studies import study_toml

    models = {name: {"model": name, **small(name, 8)} for name in architectures.list_models()}
    return write_study(tmp_path, study_toml(
        "zoo", seeds=[0], defaults={"epochs": 1, "batch_size": 32}, architectures=models,
        datasets={"digits": {"source": "digits", "subset": 5}}, tables=(),
        matrices=[{"name": "all", "architectures": list(models), "datasets": ["digits"]}]))


def test_every_registered_family_trains_from_a_planned_config(tmp_path):
    """The seam between plan, registry and loop: each family's resolved config trains one epoch."""
    from runner.plan.expand import expand
    from runner.study.spec import load_study

    torch.set_num_threads(1)
    plan = expand(load_study(_every_family_study(tmp_path)))
    for run in plan.runs:
        s = train(run.config)
        assert set(s) == Summary.__required_keys__ and 0.0 <= s["test_acc"] <= 1.0, run.label


def test_an_upstream_note_adds_the_declared_optional_keys(tmp_path):
    """What the worker adds to the summary of an ``init = "run:..."`` run is what Summary declares optional."""
    from runner.records.runfolder import RunFolder
    from runner.train.worker import started_from

    up, down = RunFolder(tmp_path / "up"), RunFolder(tmp_path / "down")
    up.create({"id": "up"})
    down.create({"id": "down"})
    up.finish(up.start_attempt({}), {})
    assert set(started_from(down, up)) == Summary.__optional_keys__
