"""Staged studies: a fine-tuning cell starts from the weights of a pretraining cell.

A real two-stage study on digits (pretrain a CNN on digits 0-4, fine-tune it on 5-9 with a
frozen backbone) launched with real workers: the upstream is trained first even when only the
downstream is selected, the frozen parameters (BatchNorm statistics included) do not move, and
retraining the upstream makes the finished downstream stale. Bad dependencies are refused at
plan time with one line.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from conftest import run_cli, staged_study, trained_by_other_code, write_study
from runner.errors import SpecError
from runner.plan.diff import effective_states
from runner.plan.expand import expand
from runner.plan.identity import ids
from runner.study.spec import load_study


def _study(tmp_path, init: str = "run:pretrain", extra: str = "", seeds: tuple[int, ...] = (0,)):
    finetune = {"init": init, "freeze": "all_but_head", "head_lr": 0.01}
    write_study(tmp_path, staged_study(epochs=2, finetune=finetune, seeds=seeds) + extra)
    return tmp_path / "experiments.toml"


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def _status(cwd, *args) -> dict:
    out = run_cli("status", "--json", *args, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return {r["label"]: r for r in json.loads(out.stdout)["runs"]}


def test_the_downstream_resolves_to_its_upstream_run_and_keeps_one_cell_over_seeds(tmp_path):
    runs = {r.label: r for r in expand(load_study(_study(tmp_path, seeds=(0, 1)))).runs}
    for seed in (0, 1):
        down, up = runs[f"cnn/high/s{seed}"], runs[f"cnn/low/s{seed}"]
        assert down.upstream == up.id and down.config["train"]["init"] == f"run:{up.id}"
        assert ids(down.config, upstream_cell=up.cell) == (down.id, down.cell)  # the one rule of ids
    assert runs["cnn/high/s0"].cell == runs["cnn/high/s1"].cell  # the seeds of a fine-tuning cell stay one cell
    # editing the upstream's recipe makes a new upstream run, hence a new downstream run
    edited = _study(tmp_path / "edited", seeds=(0, 1),
                    extra='\n[[override]]\nmatch = { matrix = "pretrain" }\nset = { epochs = 3 }\n')
    again = {r.label: r for r in expand(load_study(edited)).runs}
    assert again["cnn/high/s0"].id != runs["cnn/high/s0"].id
    assert again["cnn/high/s0"].upstream == again["cnn/low/s0"].id != runs["cnn/low/s0"].id


def test_a_finished_downstream_is_stale_while_its_upstream_is_not_done_or_trained_again(tmp_path):
    plan = expand(load_study(_study(tmp_path)))
    up, down = (next(r for r in plan.runs if r.label == label) for label in ("cnn/low/s0", "cnn/high/s0"))

    class Rec:
        def __init__(self, state, finished_at=None, summary=None):
            self.state, self.finished_at, self.summary, self.git_commit = state, finished_at, summary, None

    def states(up_rec):
        got, why = effective_states([down], {up.id: up_rec, down.id: Rec("done", 20.0, {"init_run_finished_at": 10.0})},
                                    None, plan.by_id())
        return got[up.id], got[down.id], why.get(down.id)

    assert states(Rec("done", 10.0)) == ("done", "done", None)
    assert states(Rec("failed")) == ("failed", "stale", "its upstream cnn/low/s0 is failed")
    assert states(Rec("done", 15.0)) == ("done", "stale", "its upstream cnn/low/s0 trained again after it started from it")


@pytest.mark.parametrize("init, message", [
    ("run:finetune", "cyclic dependency: cnn/high/s0 -> cnn/high/s0"),
    ("run:nowhere", "no matrix named nowhere; defined: pretrain, finetune"),
    ("run:dataset=nowhere", 'selects no run of the study (cell cnn/high/s0)'),
    ("run:matrix=pretrain,architecture.nope=1", "architecture.nope: no run has architecture.nope"),
])
def test_a_cyclic_or_dangling_dependency_is_refused_at_plan_time(tmp_path, init, message):
    with pytest.raises(SpecError) as e:
        expand(load_study(_study(tmp_path, init)))
    assert message in str(e.value) and "[[matrix]] finetune set init:" in str(e.value)


def test_a_cycle_through_two_cells_names_the_loop_in_one_line_with_exit_code_2(tmp_path):
    extra = '\n[[override]]\nmatch = { matrix = "pretrain" }\nset = { init = "run:finetune" }\n'
    _study(tmp_path, extra=extra)
    out = run_cli("plan", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "init: cyclic dependency: cnn/low/s0 -> cnn/high/s0 -> cnn/low/s0" in out.stderr
    assert "Traceback" not in out.stderr


def test_pretrained_weights_are_refused_for_an_architecture_timm_does_not_provide(tmp_path):
    with pytest.raises(SpecError, match="pretrained weights exist for timm:<model> architectures only"):
        expand(load_study(_study(tmp_path, "pretrained")))


def test_two_stage_study_runs_in_order_freezes_the_backbone_and_goes_stale_when_the_upstream_retrains(tmp_path):
    _study(tmp_path)
    (tmp_path / ".gitignore").write_text("results/\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "study")

    plan = run_cli("plan", cwd=tmp_path, timeout=120)
    assert "stage 1: pretrain (1 run)" in plan.stdout and "stage 2: finetune (1 run)" in plan.stdout, plan.stdout

    # only the downstream is selected: its upstream is trained first, then it
    out = run_cli("launch", "--matrix", "finetune", "--workers", "2", cwd=tmp_path)
    assert out.returncode == 0 and "2 done" in out.stdout, out.stdout + out.stderr
    runs = _status(tmp_path)
    up, down = runs["cnn/low/s0"], runs["cnn/high/s0"]
    assert up["state"] == down["state"] == "done"
    assert down["upstream"] == up["id"] and down["stage"] == 2
    folders = tmp_path / "results" / "runs"
    up_end = [json.loads(line) for line in (folders / up["id"] / "attempts.jsonl").open()][-1]["time"]
    down_events = [json.loads(line) for line in (folders / down["id"] / "attempts.jsonl").open()]
    assert down_events[0]["time"] >= up_end  # the downstream started after its upstream finished
    engine = next(e["engine"] for e in down_events if e["event"] == "engine")
    assert engine["init"] == f"run:{up['id']}" and engine["frozen_params"] > 0 and engine["fresh_head"] == []

    # frozen: every tensor but the head's, BatchNorm statistics included, is the upstream's
    before = torch.load(folders / up["id"] / "model.pt", weights_only=True)
    after = torch.load(folders / down["id"] / "model.pt", weights_only=True)
    moved = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert moved == ["head.bias", "head.weight"]
    assert down["summary"]["init_run"] == up["id"]

    # a commit that leaves the code alone changes nothing; the first stage trained by other code
    # is retrained on request, and then the second is stale because of it
    (tmp_path / "notes.txt").write_text("what we saw\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "notes")
    assert _status(tmp_path)["cnn/low/s0"]["state"] == "done"
    trained_by_other_code(folders / up["id"])
    assert _status(tmp_path)["cnn/high/s0"]["reason"] == "its upstream cnn/low/s0 is stale"
    again = run_cli("launch", "--matrix", "pretrain", "--rerun", "stale", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 0 and "1 done" in again.stdout, again.stdout + again.stderr
    runs = _status(tmp_path)
    assert runs["cnn/low/s0"]["state"] == "done"
    assert runs["cnn/high/s0"]["state"] == "stale"
    assert "its upstream cnn/low/s0 trained again after it started from it" in runs["cnn/high/s0"]["reason"]


def test_head_lr_gives_the_head_its_own_rate_through_the_schedule():
    from architectures import create_model
    from runner.train.finetune import freeze, head_parameters
    from runner.train.optim import make_optimizer, set_lr
    from runner.study.recipe import Recipe

    model = create_model("resnet18_cifar", num_classes=5, in_chans=1, img_size=8, width=4)
    assert freeze(model, "backbone") == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    opt = make_optimizer(model, Recipe(lr=1e-3, head_lr=1e-2), head=head_parameters(model))
    set_lr(opt, 5e-4)  # the schedule, half way down
    head = {id(p) for p in model.head.parameters()}
    rates = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert set(rates) == head and all(rates[i] == pytest.approx(5e-3) for i in head)  # the rest is frozen
