"""The training engine in one process: recipes (optimizers, schedules, accumulation, EMA,
max_steps, eval_every, early stopping, time budget), speed switches recorded and kept out
of run ids, divergence, and checkpoints that resume mid-epoch to the same weights."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from engine_configs import config
from runner.train.optim import WeightEma, lr_at, make_optimizer, param_groups
from runner.study.recipe import Recipe
from runner.train.engine import is_convolutional
from runner.train.loop import Interrupted, train
from runner.train.loop_state import Diverged


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # bitwise-reproducible CPU kernels


def _train(cfg: dict, tmp_path=None, **kw) -> tuple[dict, list, list]:
    epochs, engines = [], []
    if tmp_path is not None:
        kw.setdefault("checkpoint", tmp_path / "checkpoint.pt")
        kw.setdefault("weights", tmp_path / "model.pt")
    summary = train(cfg, on_epoch=lambda e, s, m: epochs.append((e, s, m)), on_engine=engines.append, **kw)
    return summary, epochs, engines


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize("optimizer,lr", [("adamw", 3e-3), ("sgd", 0.1), ("lamb", 1e-2)])
def test_each_optimizer_learns_digits(optimizer, lr):
    s, _, _ = _train(config("cnn", optimizer=optimizer, lr=lr, epochs=2))
    assert s["test_acc"] > 0.5, f"{optimizer}: {s['test_acc']}"  # chance is 0.1


def test_norms_biases_and_named_exemptions_get_no_weight_decay():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.norm = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 8)

        def no_weight_decay(self):
            return {"pos_embed"}

    net = Net()
    decay, no_decay = param_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net.fc.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(net.pos_embed), id(net.norm.weight), id(net.norm.bias),
                                                   id(net.fc.bias)}
    sgd = make_optimizer(net, Recipe(optimizer="sgd", momentum=0.9))
    assert sgd.param_groups[0]["nesterov"] is True and sgd.param_groups[0]["momentum"] == 0.9


def test_a_models_own_decay_rule_decides_the_groups():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.centres = nn.Parameter(torch.zeros(4, 2))
            self.norm = nn.LayerNorm(8)

        def decayed(self, name, p):
            return name != "centres"

    net = Net()
    decay, no_decay = param_groups(net, 0.1)
    assert {id(p) for p in decay["params"]} == {id(net.norm.weight), id(net.norm.bias)}
    assert {id(p) for p in no_decay["params"]} == {id(net.centres)}


def test_adam_couples_weight_decay_into_the_gradient_and_adamw_does_not():
    """One step from w = 1 with a zero loss gradient: Adam's L2 term wd * w becomes the gradient, so
    Adam moves by lr (sign of its normalized step); AdamW moves by lr * wd * w only."""
    steps = {}
    for optimizer in ("adam", "adamw"):
        net = nn.Linear(1, 1, bias=False)
        nn.init.ones_(net.weight)
        opt = make_optimizer(net, Recipe(optimizer=optimizer, lr=0.1, weight_decay=0.01))
        assert type(opt).__name__ == {"adam": "Adam", "adamw": "AdamW"}[optimizer]
        (net.weight * 0.0).sum().backward()
        opt.step()
        steps[optimizer] = 1.0 - net.weight.item()
    assert steps["adam"] == pytest.approx(0.1, rel=1e-4)
    assert steps["adamw"] == pytest.approx(0.1 * 0.01, rel=1e-4)


def test_schedules():
    kw = dict(total_steps=100, warmup_steps=10, steps_per_epoch=10)
    step = Recipe(lr=1.0, schedule="step", decay_epochs=3, decay_rate=0.5)
    assert [lr_at(s, step, **kw) for s in (0, 9, 29, 30, 59, 60)] == pytest.approx([0.1, 1.0, 1.0, 0.5, 0.5, 0.25])
    milestones = Recipe(lr=1.0, schedule="step", decay_epochs=[2, 5], decay_rate=0.1)
    assert [lr_at(s, milestones, **kw) for s in (10, 19, 20, 49, 50, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    constant = Recipe(lr=0.3, schedule="constant")
    assert [lr_at(s, constant, **kw) for s in (0, 10, 99)] == pytest.approx([0.03, 0.3, 0.3])


def test_logged_lr_follows_the_schedule_per_step():
    cfg = config("vit", epochs=3, lr=0.01, schedule="step", decay_epochs=1, decay_rate=0.5)
    s, epochs, _ = _train(cfg)
    # the lr logged for an epoch is that of its last step: epoch e ends just before the e-th decay
    assert [m["lr"] for _, _, m in epochs] == pytest.approx([0.01, 0.005, 0.0025])


def test_gradient_accumulation_gives_the_same_steps_as_the_whole_batch(tmp_path):
    """Without BatchNorm or dropout, accumulating 4 micro-batches is the same optimizer step as the
    whole batch (up to float summation order). With SGD: the attention's key bias gets no gradient
    in exact arithmetic (softmax ignores a constant per query), and Adam would scale the float
    noise left in its place up to steps of the full learning rate, differing from run to run."""
    whole, accum = (_weights_without_dropout(config("vit", epochs=1, optimizer="sgd", momentum=0.9, lr=0.05, **kw),
                                             tmp_path / f"{i}.pt")
                    for i, kw in enumerate([{}, {"accum_steps": 4}]))
    for k in whole:
        torch.testing.assert_close(whole[k], accum[k], rtol=1e-4, atol=1e-5, msg=k)


def _weights_without_dropout(cfg: dict, path) -> dict:
    train({**cfg, "architecture": {**cfg["architecture"], "dropout": 0.0}}, weights=path)
    return torch.load(path, weights_only=True)


def test_weight_ema_is_the_running_average_and_is_what_gets_evaluated(tmp_path):
    model = nn.Linear(2, 1)
    ema = WeightEma(model, decay=0.75)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, start + 1.0)  # 0.75 * w + 0.25 * (w + 4)

    # the EMA does not change the training trajectory, so the run without it has the raw weights
    with_ema = train(config("cnn", epochs=2, ema_decay=0.9, select="last"), weights=tmp_path / "ema.pt")
    without = train(config("cnn", epochs=2, select="last"), weights=tmp_path / "raw.pt")
    assert with_ema["train_loss"] == without["train_loss"]
    averaged, raw = (torch.load(tmp_path / f, weights_only=True) for f in ("ema.pt", "raw.pt"))
    params = [k for k in raw if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(not torch.equal(averaged[k], raw[k]) for k in params)  # saved: the average
    assert all(torch.equal(averaged[k], raw[k]) for k in raw if k not in params)  # BatchNorm statistics: copied
    assert with_ema["test_loss"] != without["test_loss"]  # and tested: the average


def test_max_steps_ends_training_and_the_schedule_there():
    cfg = config("vit", epochs=10, max_steps=25, min_lr=1e-5)
    s, epochs, _ = _train(cfg)
    steps_per_epoch = epochs[0][1]
    assert s["steps"] == 25 and s["stopped_by"] == "max_steps"
    assert s["epochs"] == math.ceil(25 / steps_per_epoch)  # the partial epoch counts as one
    # the cosine spans 25 steps, not 10 epochs: the last step's lr is next to the floor
    last_lr = lr_at(24, Recipe(**cfg["train"]), total_steps=25, warmup_steps=0, steps_per_epoch=steps_per_epoch)
    assert epochs[-1][2]["lr"] == pytest.approx(last_lr) and last_lr < 0.01 * 3e-3
    assert "val_acc" in epochs[-1][2]


def test_eval_every_validates_every_n_epochs_and_after_the_last():
    s, epochs, _ = _train(config("vit", epochs=5, eval_every=2))
    assert [e for e, _, m in epochs if "val_acc" in m] == [2, 4, 5]
    assert s["best_epoch"] in (2, 4, 5)


def test_early_stopping_waits_patience_validations():
    # lr so small nothing changes: the first validation is the best, the next two do not improve
    s, epochs, _ = _train(config("vit", epochs=10, lr=1e-12, patience=2))
    assert s["stopped_by"] == "early_stop" and s["epochs"] == 3 and len(epochs) == 3
    assert s["best_epoch"] == 1
    loss, _, _ = _train(config("vit", epochs=10, lr=1e-12, patience=1, monitor="val_loss"))
    assert loss["epochs"] == 2 and loss["monitor"] == "val_loss"


def test_time_budget_stops_training_and_still_tests():
    s, epochs, _ = _train(config("vit", epochs=50, time_budget_min=0.5 / 60))  # half a second
    assert s["stopped_by"] == "time_budget" and s["epochs"] < 50
    assert len(epochs) == s["epochs"] and "val_acc" in epochs[-1][2] and 0 <= s["test_acc"] <= 1


def test_a_diverging_run_stops_at_the_first_bad_step():
    # normalizing by a near-zero std sends inputs to ~1e38: the very first loss is not finite
    cfg = config("vit", dataset={"std": [1e-38]})
    seen = []
    with pytest.raises(Diverged, match=r"^diverged at epoch 1 step 1\b"):
        train(cfg, on_epoch=lambda *a: seen.append(a))
    assert seen == []  # no epoch finished: it stopped at once


def test_divergence_mid_run_names_its_epoch_and_step():
    with pytest.raises(Diverged) as e:
        train(config("vit", optimizer="sgd", lr=1e6, momentum=0.0, epochs=3))
    assert re.match(r"diverged at epoch \d+ step \d+", str(e.value))


# ---------------------------------------------------------------- speed switches


def test_speed_switches_are_recorded_and_not_part_of_the_run_id():
    from runner.plan.identity import ids

    fast = config("cnn", precision="bf16", channels_last=True, fused=True, checkpoint_every=5, compile=False)
    assert ids(fast) == ids(config("cnn"))
    s, _, engines = _train({**fast, "train": {**fast["train"], "epochs": 2}})
    engine = engines[0]
    assert engine["precision"] == "bf16" and engine["channels_last"] is True and engine["device"] == "cpu"
    assert engine["fused"] is True and engine["checkpoint_every"] == 5 and engine["compile"] is False
    assert engine["resumed_from"] is None and s["precision"] == "bf16" and s["test_acc"] > 0.5
    lamb = config("cnn", optimizer="lamb", fused=True)
    assert _train({**lamb, "train": {**lamb["train"], "epochs": 1}})[2][0]["fused"] is False  # LAMB has no fused kernel


def test_auto_switches_on_cpu_mean_fp32_and_contiguous():
    _, _, engines = _train(config("cnn", epochs=1))
    assert engines[0]["precision"] == "fp32" and engines[0]["channels_last"] is False and engines[0]["fused"] is False


def test_convolutional_models_are_told_apart_from_transformers():
    from architectures import create_model

    assert is_convolutional(create_model("resnet18_cifar", num_classes=10, in_chans=1, img_size=8, width=4))
    assert not is_convolutional(create_model("vit", num_classes=10, in_chans=1, img_size=8, patch_size=4, dim=16,
                                             depth=1, heads=2, mlp_dim=32))


def test_compiled_model_trains_and_saves_the_plain_module_weights(tmp_path):
    """torch.compile for real (inductor on the CPU, about half a minute)."""
    from runner.train.loop import build_model, load_split

    cfg = config("vit", epochs=2, compile=True)
    s, _, engines = _train(cfg, tmp_path)
    assert engines[0]["compile"] is True and s["test_acc"] > 0.2
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    plain = build_model(cfg["architecture"], load_split(cfg["dataset"], "train")[1]).state_dict()
    assert saved.keys() == plain.keys()  # loadable into an eager model: no "_orig_mod." prefixes


def test_fp16_with_loss_scaling_trains():
    s, _, engines = _train(config("cnn", epochs=2, precision="fp16"))
    assert engines[0]["precision"] == "fp16" and s["test_acc"] > 0.5


# ---------------------------------------------------------------- checkpoints


def _stop_after(n: int):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > n

    return should_stop


@pytest.mark.parametrize("arch,recipe", [
    ("vit", dict(crop="pad", crop_padding=1, hflip=0.5, mixup=0.2, ema_decay=0.9)),  # device path, dropout, mixup
    ("cnn", dict(data_path="loader", crop="resized", accum_steps=2)),  # DataLoader path, BatchNorm
    ("vit", dict(auto_augment="rand-m9-n2", eval_every=2, patience=5)),  # timm policy through the loader
])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, arch, recipe):
    cfg = config(arch, epochs=3, **recipe)
    (tmp_path / "straight").mkdir()
    (tmp_path / "stopped").mkdir()
    straight, straight_epochs, _ = _train(cfg, tmp_path / "straight")
    with pytest.raises(Interrupted):
        _train(cfg, tmp_path / "stopped", should_stop=_stop_after(30))
    assert (tmp_path / "stopped" / "checkpoint.pt").exists()
    resumed, resumed_epochs, engines = _train(cfg, tmp_path / "stopped")
    assert engines[0]["resumed_from"]["step"] == 30 and engines[0]["resumed_from"]["batch"] > 0  # mid-epoch
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "stopped" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("test_acc", "test_loss", "test_acc_last", "val_acc", "best_val_acc", "train_loss", "steps", "best_epoch"):
        assert straight[key] == resumed[key], key
    # the epoch it was stopped in is reported whole, with the same numbers
    assert straight_epochs[-1][2]["train_loss"] == resumed_epochs[-1][2]["train_loss"]


def test_checkpoints_load_with_weights_only_and_hold_every_rng(tmp_path):
    cfg = config("vit", epochs=1)
    with pytest.raises(Interrupted):
        _train(cfg, tmp_path, should_stop=_stop_after(3))
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(saved["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert saved["progress"]["step"] == 3 and saved["progress"]["batch"] == 3
    assert {"model", "optimizer", "scaler", "ema", "best_state"} <= set(saved)


def test_a_finished_loop_resumes_straight_to_testing(tmp_path):
    """A crash after the last epoch's checkpoint (while testing) does not train again."""
    cfg = config("vit", epochs=2)
    first, _, _ = _train(cfg, tmp_path)
    again, epochs, engines = _train(cfg, tmp_path)  # the worker removes the checkpoint once done; here it is kept
    assert epochs == [] and engines[0]["resumed_from"]["epoch"] == 2
    assert again["test_acc"] == first["test_acc"] and again["steps"] == first["steps"]
