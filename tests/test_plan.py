"""Expansion of [[matrix]] blocks, [[override]] order, ids, labels and --where selection."""

from __future__ import annotations

import pytest

from conftest import write_study
from runner.errors import SelectionError
from runner.plan.diff import count_states, state_of
from runner.plan.expand import expand
from runner.plan.identity import ids
from runner.plan.select import select
from runner.study.selectors import parse_where
from runner.study.spec import load_study
from studies import study_toml

BASE = study_toml(epochs=2)
NO_TABLE = study_toml(epochs=2, tables=())  # for cells a vit/digits table could not show apart


def plan_of(tmp_path, text):
    return expand(load_study(write_study(tmp_path, text)))


def test_cartesian_product_of_axes(tmp_path):
    p = plan_of(tmp_path, BASE)
    assert [r.label for r in p.runs] == ["vit/digits/s0", "vit/digits/s1", "cnn/digits/s0", "cnn/digits/s1"]
    assert len({r.id for r in p.runs}) == 4
    # the runs of one cell differ only in the seed
    assert len({r.cell for r in p.runs}) == 2
    assert p.runs[0].config["train"]["epochs"] == 2 and p.runs[0].config["architecture"]["pool"] == "cls"


def test_grid_exclude_and_set(tmp_path):
    text = NO_TABLE.replace('datasets = ["digits"]\n', 'datasets = ["digits"]\nset = { lr = 1e-3 }\n'
                        'grid = { "architecture.depth" = [1, 2] }\n'
                        'exclude = [{ architecture = "cnn" }, { "architecture.depth" = 2, seed = 1 }]\n', 1)
    text = text.replace('model = "resnet18_cifar"\nwidth = 4', 'model = "vit"\ndepth = 3')
    p = plan_of(tmp_path, text)
    assert [r.label for r in p.runs] == ["vit/digits/depth=1/s0", "vit/digits/depth=1/s1", "vit/digits/depth=2/s0"]
    assert all(r.config["train"]["lr"] == 1e-3 for r in p.runs)
    assert [r.config["architecture"]["depth"] for r in p.runs] == [1, 1, 2]


def test_overrides_apply_in_order_and_match_on_config(tmp_path):
    text = NO_TABLE + """
[[override]]
match = { architecture = "vit" }
set = { epochs = 5 }

[[override]]
match = { epochs = 5, seed = 1 }
set = { epochs = 7 }
"""
    p = plan_of(tmp_path, text)
    assert {r.label: r.config["train"]["epochs"] for r in p.runs} == {
        "vit/digits/s0": 5, "vit/digits/s1": 7, "cnn/digits/s0": 2, "cnn/digits/s1": 2}


def test_a_cell_reached_twice_is_one_run(tmp_path):
    text = BASE + '\n[[matrix]]\nname = "again"\narchitectures = ["vit"]\ndatasets = ["digits"]\nseeds = [1, 2]\n'
    p = plan_of(tmp_path, text)
    assert len(p.runs) == 5
    both = [r for r in p.runs if r.label == "vit/digits/s1"]
    assert len(both) == 1 and both[0].matrices == ("main", "again")
    assert len(select(p, matrix=["again"])) == 2


def test_ids_follow_what_is_trained_not_names_or_data_location(tmp_path):
    a = plan_of(tmp_path / "a", BASE)
    renamed = BASE.replace("[architectures.vit]", "[architectures.transformer]").replace('["vit", "cnn"]', '["transformer", "cnn"]')
    moved = BASE.replace('source = "digits"', 'source = "digits"\nroot = "/elsewhere"')
    explicit_default = BASE.replace("depth = 1", "depth = 1\npool = \"cls\"")
    changed = BASE.replace("depth = 1", "depth = 2")
    run_ids = [r.id for r in a.runs]
    assert [r.id for r in plan_of(tmp_path / "b", renamed).runs] == run_ids
    assert [r.id for r in plan_of(tmp_path / "c", moved).runs] == run_ids
    assert [r.id for r in plan_of(tmp_path / "d", explicit_default).runs] == run_ids
    assert [r.id for r in plan_of(tmp_path / "e", changed).runs][:2] != run_ids[:2]
    assert plan_of(tmp_path / "c", moved).runs[0].config["dataset"]["root"] == "/elsewhere"
    # int and float spellings of the same number are the same run
    assert plan_of(tmp_path / "f", BASE.replace("lr = 3e-3", "lr = 3.0e-3")).runs[0].id == run_ids[0]
    assert ids(a.runs[0].config) == (run_ids[0], a.runs[0].cell)
    # the cell id is the run id without the seed: the seeds of a cell share it
    assert a.runs[0].cell == a.runs[1].cell and a.runs[0].id != a.runs[1].id


def test_where_filters_axes_and_dotted_keys(tmp_path):
    p = plan_of(tmp_path, BASE)
    assert [r.label for r in select(p, where=parse_where(["architecture=vit"]))] == ["vit/digits/s0", "vit/digits/s1"]
    assert [r.label for r in select(p, where=parse_where(["seed=1", "architecture=vit,cnn"]))] == ["vit/digits/s1", "cnn/digits/s1"]
    assert [r.label for r in select(p, where=parse_where(["architecture.width=4"]))] == ["cnn/digits/s0", "cnn/digits/s1"]
    assert len(select(p, where=parse_where(["epochs=2"]))) == 4
    assert len(select(p, where=parse_where(["train.lr=0.003"]))) == 4
    with pytest.raises(SelectionError, match=r"^--where epochs=3: selects no run: epochs = 3; epochs values are 2$"):
        select(p, where=parse_where(["epochs=3"]))
    with pytest.raises(SelectionError, match="selects no run in --matrix main: architecture = .vit_tiny.; "
                                             "architectures are vit, cnn"):
        select(p, matrix=["main"], where=parse_where(["architecture=vit_tiny"]))
    with pytest.raises(SelectionError, match="no cell has architecture = .vit., architecture.width = 4 together"):
        select(p, where=parse_where(["architecture=vit", "architecture.width=4"]))
    with pytest.raises(SelectionError, match="no run has architecture.widht"):
        select(p, where=parse_where(["architecture.widht=4"]))


def test_one_selector_syntax_in_every_block_and_in_where(tmp_path):
    """"a,b" and [a, b] mean either, in a block's match exactly as in --where (a probe's
    match = { architecture = "vit,cnn" } used to match nothing)."""
    from runner.study.selectors import axes_of, matches

    p = plan_of(tmp_path, BASE)
    keep = lambda rule: [r.label for r in p.runs if matches(axes_of(r), r.config, rule)]  # noqa: E731
    everything = [r.label for r in p.runs]
    assert keep({"architecture": "vit,cnn"}) == everything == keep({"architecture": ["vit", "cnn"]})
    assert keep({"seed": "0,1"}) == everything
    assert keep({"seed": [1]}) == ["vit/digits/s1", "cnn/digits/s1"] == keep({"seed": "1,7"})
    assert keep({"lr": "0.003,1"}) == everything and keep({"lr": [1e-3]}) == []
    assert [r.label for r in select(p, where=parse_where(["architecture=vit,cnn", "seed=0,1"]))] == everything


def test_state_of_marks_runs_done_at_another_commit_stale():
    class Rec:
        def __init__(self, state, commit):
            self.state, self.git_commit = state, commit

    assert state_of(None, "abc") == "missing"
    assert state_of(Rec("planned", None), "abc") == "missing"
    assert state_of(Rec("done", "abc"), "abc") == "done"
    assert state_of(Rec("done", "old"), "abc") == "stale"
    assert state_of(Rec("done", "old"), None) == "done"  # outside git nothing is stale
    assert state_of(Rec("failed", "abc"), "abc") == "failed"


def test_counts_come_in_the_shown_order_without_empty_states():
    assert list(count_states(["missing", "failed", "done", "done"]).items()) == [("done", 2), ("failed", 1), ("missing", 1)]


def test_explain_names_the_changed_key_and_its_block_and_orphans_are_counted_not_deleted(tmp_path):
    """An edit's consequences before anything trains: each missing run that was done under another
    config says what changed and which block changed it; the done runs left behind are listed."""
    import json

    from conftest import cli
    from report_fixtures import STUDY, known_study

    known_study(tmp_path)
    edited = STUDY + '\n[[override]]\nmatch = { architecture = "vit", dataset = "digits" }\nset = { lr = 0.002 }\n'
    write_study(tmp_path, edited)
    out = cli("plan", "--sync", "--explain", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("vit/digits/s")]
    assert len(lines) == 3 and all("train.lr 0.001 -> 0.002 ([[override]] #1 set)" in line for line in lines), out.stdout
    assert "3 done run(s) in the store the study no longer plans" in out.stdout
    view = json.loads(cli("plan", "--json", cwd=tmp_path).stdout)
    changed = [r["changed_from"] for r in view["runs"] if r.get("changed_from")]
    assert len(changed) == 3 and changed[0]["changes"] == ["train.lr 0.001 -> 0.002 ([[override]] #1 set)"]
    assert sorted(o["label"] for o in view["orphans"]) == ["vit/digits/s0", "vit/digits/s1", "vit/digits/s2"]
    listed = cli("plan", "--orphans", cwd=tmp_path).stdout
    assert listed.count("orphan vit/digits/s") == 3
    assert all((tmp_path / "results" / "runs" / o["id"]).is_dir() for o in view["orphans"])  # nothing deleted
    # the plan's cell id is something `runner show` answers: the cell's runs
    cnn = next(r for r in view["runs"] if r["label"] == "cnn/digits/s0")
    shown = cli("show", cnn["cell"], cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith(f"cell {cnn['cell']}: 3 run(s)"), shown.stdout + shown.stderr
    assert cnn["id"] in shown.stdout
    gone = cli("show", view["orphans"][0]["id"], cwd=tmp_path)
    assert "(no longer planned by the study)" in gone.stdout
