"""A catalogue of malformed study files and selections: each gives one line on stderr naming
the file, the key and the fix, exit code 2, no traceback, and leaves the store untouched."""

from __future__ import annotations

import hashlib

import pytest

from conftest import cli, run_cli, write_study
from runner.errors import SpecError
from runner.study.spec import load_study
from studies import study_toml

BASE = study_toml(epochs=2)


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


CATALOGUE = [
    ("syntax", edit("[study]", "[study"), "experiments.toml:1:7: TOML syntax error"),
    ("store not a url", edit('name = "tiny"', 'name = "tiny"\nstore = "notaurl"'),
     '[study] store: "notaurl" is not a database URL; write "sqlite:///results/runner.db"'),
    ("store cannot be created", edit('name = "tiny"', 'name = "tiny"\nstore = "sqlite:////proc/runner/r.db"'),
     "[study] store: /proc/runner cannot be created: cannot write in /proc"),
    ("runs_dir cannot be created", edit('name = "tiny"', 'name = "tiny"\nruns_dir = "/proc/runner/runs"'),
     "[study] runs_dir: /proc/runner/runs cannot be created: cannot write in /proc"),
    ("runs_dir under a file", edit('name = "tiny"', 'name = "tiny"\nruns_dir = "experiments.toml/runs"'),
     "experiments.toml is a file, not a folder"),
    ("control character in a path", edit('name = "tiny"', 'name = "tiny"\nreport_dir = "a\\nb"'),
     '[study] report_dir: "a\\nb" holds a control character'),
    ("study name with a line break", edit('name = "tiny"', 'name = "tiny\\n#SBATCH --uid=0"'),
     '[study] name: "tiny\\n#SBATCH --uid=0" is not a valid name'),
    ("duplicate toml key", edit('name = "tiny"', 'name = "tiny"\nname = "again"'), "TOML syntax error"),
    ("unknown section", BASE + "\n[studdy]\nx = 1\n", "[studdy] unknown section; valid sections:"),
    ("missing study", BASE.replace('[study]\nname = "tiny"\nseeds = [0, 1]\n', ""), "[study] required section is missing"),
    ("unknown study key", edit('name = "tiny"', 'name = "tiny"\nnmae = 1'), "[study] nmae: unknown key; valid keys:"),
    ("wrong type", edit("heads = 2", 'heads = "8"'),
     'experiments.toml: [architectures.vit] heads: expected an integer, got "8"'),
    ("float for int", edit("depth = 1", "depth = 1.5"), "[architectures.vit] depth: expected an integer, got 1.5"),
    ("unknown architecture", edit('model = "vit"', 'model = "vitt"'),
     '[architectures.vit] model: unknown architecture "vitt"; choices: conv_attention, dual_attention, '
     'resnet18_cifar, resnet34_cifar, san_pairwise, san_patchwise, vit, or timm:<model>'),
    ("missing model", edit('model = "vit"\n', ""), "[architectures.vit] model: required"),
    ("unknown hparam", edit("depth = 1", "dpeth = 1"), "[architectures.vit] dpeth: unknown key; valid keys:"),
    ("unknown dataset source", edit('source = "digits"', 'source = "cifar11"'),
     '[datasets.digits] source: unknown dataset "cifar11"; choices: cifar10, cifar100, digits, fashion_mnist, imagefolder, mnist'),
    ("empty axis", edit('architectures = ["vit", "cnn"]', "architectures = []"),
     "[[matrix]] main architectures: must not be empty"),
    ("unknown name in matrix", edit('architectures = ["vit", "cnn"]', 'architectures = ["vit", "vit2"]'),
     '[[matrix]] main architectures: unknown name "vit2"; defined: cnn, vit'),
    ("duplicate matrix", BASE + '\n[[matrix]]\nname = "main"\narchitectures = ["vit"]\ndatasets = ["digits"]\n',
     '[[matrix]] name: "main" appears twice'),
    ("duplicate table", BASE + '\n[[table]]\nname = "accuracy"\n', '[[table]] name: "accuracy" appears twice'),
    ("negative seed", edit("seeds = [0, 1]", "seeds = [0, -1]"), "[study] seeds: -1 is out of range"),
    ("string seed", edit("seeds = [0, 1]", 'seeds = [0, "1"]'), '[study] seeds.1: expected an integer, got "1"'),
    ("duplicate seed", edit("seeds = [0, 1]", "seeds = [1, 1]"), "[study] seeds: 1 appears twice"),
    ("empty seeds", edit("seeds = [0, 1]", "seeds = []"), "[study] seeds: must not be empty"),
    ("unknown recipe key", edit("epochs = 2", "epoch = 2"), "[defaults] epoch: unknown key; valid keys:"),
    ("recipe wrong type", edit("lr = 3e-3", 'lr = "fast"'), '[defaults] lr: expected a number, got "fast"'),
    ("recipe bad choice", edit("lr = 3e-3", 'lr = 3e-3\noptimizer = "adan"'),
     '[defaults] optimizer: expected one of "adamw", "adam", "sgd" or "lamb", got "adan"'),
    ("recipe bound", edit("epochs = 2", "epochs = 0"), "[defaults] epochs: must be >= 1, got 0"),
    ("heads do not divide dim", edit("heads = 2", "heads = 3"),
     "[architectures.vit] heads: 3 heads do not divide dim 16; choose heads among 1, 2, 4, 8, 16"),
    ("patch does not divide image", edit("patch_size = 4", "patch_size = 3"),
     "[architectures.vit] patch_size: patch size 3 does not divide the image size 8"),
    ("bad key in set", edit('datasets = ["digits"]', 'datasets = ["digits"]\nset = { "architecture.dpeth" = 2 }'),
     "[[matrix]] main set dpeth: unknown key; valid keys:"),
    ("bad type in grid", edit('datasets = ["digits"]', 'datasets = ["digits"]\ngrid = { "architecture.depth" = [1, "2"] }'),
     '[[matrix]] main grid depth: expected an integer, got "2"'),
    ("empty grid", edit('datasets = ["digits"]', 'datasets = ["digits"]\ngrid = { lr = [] }'),
     "[[matrix]] main grid lr: empty list"),
    ("empty exclude rule", edit('datasets = ["digits"]', 'datasets = ["digits"]\nexclude = [{}]'),
     "[[matrix]] main exclude an empty rule"),
    ("set an axis", edit('datasets = ["digits"]', 'datasets = ["digits"]\nset = { seed = 3 }'),
     "[[matrix]] main set seed: an axis cannot be set here"),
    ("unknown override key", BASE + '\n[[override]]\nmatch = { architecture = "vit" }\nset = { epocs = 1 }\n',
     "[[override]] #1 set epocs: unknown key"),
    ("matrix without name", edit('name = "main"\n', ""), "[[matrix]] #1 name: required key is missing"),
    ("table where unknown key", edit('metric = "test_acc"', 'metric = "test_acc"\nwhere = { foo = 1 }'),
     "[[table]] accuracy where foo: unknown key"),
    ("table where unknown matrix", edit('metric = "test_acc"', 'metric = "test_acc"\nwhere = { matrix = "mian" }'),
     '[[table]] accuracy where matrix: unknown matrix "mian"; defined: main'),
    # selectors that select nothing (issue 23): refused, never an empty or unchanged plan
    ("override of a renamed architecture", BASE + '\n[[override]]\nmatch = { architecture = "vit_s" }\nset = { epochs = 3 }\n',
     '[[override]] #1 match matches no cell: architecture = "vit_s"; architectures are vit, cnn'),
    ("override match unknown key", BASE + '\n[[override]]\nmatch = { "architecture.dpth" = 1 }\nset = { epochs = 3 }\n',
     "[[override]] #1 match architecture.dpth: no run has architecture.dpth; architecture keys:"),
    ("override values never together", BASE + '\n[[override]]\nmatch = { architecture = "cnn", "architecture.depth" = 1 }\n'
     'set = { epochs = 3 }\n', '[[override]] #1 match matches no cell: no cell has architecture = "cnn", '
     "architecture.depth = 1 together"),
    ("exclude with a typo'd key", edit('datasets = ["digits"]', 'datasets = ["digits"]\nexclude = [{ "architecture.dpth" = 2 }]'),
     "[[matrix]] main exclude #1 architecture.dpth: no run has architecture.dpth"),
    ("exclude that excludes nothing", edit('datasets = ["digits"]', 'datasets = ["digits"]\nexclude = [{ seed = 5 }]'),
     "[[matrix]] main exclude #1 excludes no cell: seed = 5; seeds are 0, 1"),
    ("table where that keeps nothing", edit('metric = "test_acc"', 'metric = "test_acc"\nwhere = { architecture = "vit_tiny" }'),
     '[[table]] accuracy where matches no cell: architecture = "vit_tiny"; architectures are vit, cnn'),
    ("table where unknown dotted key", edit('metric = "test_acc"', 'metric = "test_acc"\nwhere = { "train.lr" = 1, "architecture.dpth" = 1 }'),
     "[[table]] accuracy where architecture.dpth: no run has architecture.dpth"),
    ("figure where that keeps nothing", BASE + '\n[[figure]]\nname = "curves"\nkind = "curves"\nwhere = { dataset = "cifar10" }\n',
     '[[figure]] curves where matches no cell: dataset = "cifar10"; datasets are digits'),
    ("probe match that keeps nothing", BASE + '\n[[probe]]\nname = "speed"\nkind = "inference_time"\n'
     'match = { architecture = "resnet,san" }\n',
     '[[probe]] speed match matches no cell: architecture = "resnet,san"; architectures are vit, cnn'),
    ("attention probe of a CNN", BASE + '\n[[probe]]\nname = "maps"\nkind = "attention_maps"\nmatch = { architecture = "cnn" }\n',
     "[[probe]] maps match keeps only runs without an attention layer (resnet18_cifar)"),
    ("tune match that keeps nothing", BASE + '\n[tune.lr]\nmatch = { architecture = "vitt" }\nspace = { lr = { low = 1e-4, high = 1e-2 } }\n',
     '[tune.lr] match matches no cell: architecture = "vitt"; architectures are vit, cnn'),
    ("table metric typo", edit('metric = "test_acc"', 'metric = "test_accuracy"'),
     '[[table]] accuracy metric: unknown metric "test_accuracy"; did you mean test_acc? the summary metrics are: '),
    ("table metrics typo", edit('metric = "test_acc"', 'columns = "metric"\nmetrics = ["test_acc", "val_los"]').replace(
        'columns = "dataset"\n', ""), '[[table]] accuracy metrics: unknown metric "val_los"; did you mean val_loss?'),
    ("curves of a summary-only metric", BASE + '\n[[figure]]\nname = "c"\nkind = "curves"\nmetric = "test_acc"\n',
     '[[figure]] c metric: test_acc is recorded once per run, not per epoch; draw it with kind = "bar" or "scatter"'),
    ("scatter x typo", BASE + '\n[[figure]]\nname = "s"\nkind = "scatter"\nx = "param"\n',
     '[[figure]] s x: unknown metric "param"; did you mean params?'),
    ("table leaves out a grid key", edit('datasets = ["digits"]', 'datasets = ["digits"]\ngrid = { lr = [1e-3, 3e-3] }'),
     "[[table]] accuracy rows and columns: the table cell vit / digits holds 2 configurations (vit/digits/lr=0.001, "
     "vit/digits/lr=0.003) that differ in lr; add that key to rows or columns"),
    ("table name with a path", edit('name = "accuracy"', 'name = "../../x"'),
     '[[table]] ../../x name: "../../x" is not a valid name; use letters, digits'),
    ("figure name with a leading dot", BASE + '\n[[figure]]\nname = ".hidden"\nkind = "bar"\n',
     '[[figure]] .hidden name: ".hidden" is not a valid name'),
    ("probe name with a slash", BASE + '\n[[probe]]\nname = "a/b"\nkind = "inference_time"\n',
     '[[probe]] a/b name: "a/b" is not a valid name'),
    ("unknown timm model", edit('model = "vit"', 'model = "timm:resnet18x"').replace(
        "patch_size = 4\ndim = 16\ndepth = 1\nheads = 2\nmlp_dim = 32\n", ""),
     '[architectures.vit] model: timm 1.0.31 has no model "resnet18x"; did you mean resnet18'),
    ("unknown timm keyword", BASE + '\n[architectures.t]\nmodel = "timm:resnet18"\ndrop_rat = 0.1\n',
     "[architectures.t] drop_rat: not a keyword of timm's resnet18 (timm.models.resnet); did you mean drop_rate"),
    ("timm keyword typo in a grid", BASE + '\n[architectures.t]\nmodel = "timm:resnet18"\n\n[[matrix]]\nname = "t"\n'
     'architectures = ["t"]\ndatasets = ["digits"]\ngrid = { "architecture.drop_rat" = [0.1] }\n',
     "drop_rat: not a keyword of timm's resnet18"),
    ("architectures not tables", BASE.replace("[architectures.cnn]", "[architectures.cnn2]") + "\n[datasets.x]\nsource = 3\n",
     "[datasets.x] source: required, one of cifar10, cifar100, digits, fashion_mnist, imagefolder, mnist"),
]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A study folder whose store already exists, to prove bad input never touches it."""
    d = tmp_path_factory.mktemp("bad")
    f = write_study(d)
    from runner.records.store import Store

    study = load_study(f)
    Store.open(study.store, study.runs_dir, create=True).engine.dispose()  # closed: its files stay as they are
    return d


def _digest(d):
    return {p.relative_to(d): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((d / "results").rglob("*")) if p.is_file()}


def _assert_one_line_error(proc, expected: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 20


@pytest.mark.parametrize("name,text,expected", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_malformed_study_gives_one_line_and_exit_2(store_dir, name, text, expected):
    before = _digest(store_dir)
    (store_dir / "experiments.toml").write_text(text)
    from runner.plan.expand import expand

    with pytest.raises(SpecError) as e:  # the library raises the same message the CLI prints
        expand(load_study(store_dir / "experiments.toml"))
    assert expected.replace("experiments.toml: ", "").replace("experiments.toml:", "") in str(e.value)
    # the command a user types, which would otherwise write the store (in this process: see below)
    proc = cli("launch", "--workers", "1", cwd=store_dir)
    _assert_one_line_error(proc, expected)
    assert _digest(store_dir) == before


@pytest.mark.parametrize("command", ["plan", "status", "launch"])
def test_a_store_no_driver_can_open_is_one_line_at_plan_time_too(store_dir, command):
    (store_dir / "experiments.toml").write_text(edit('name = "tiny"', 'name = "tiny"\nstore = "nosuchdb://u@h/x"'))
    _assert_one_line_error(cli(command, cwd=store_dir),
                           "nosuchdb://u@h/x: not a database this runner can open (NoSuchModuleError")


def test_the_real_command_turns_a_bad_study_into_one_line_and_exit_2(store_dir):
    """Once in a process of its own, as a user runs it (the catalogue goes through the same entry point
    in this process): nothing else on stderr, no traceback, the store untouched."""
    _, text, expected = next(c for c in CATALOGUE if c[0] == "wrong type")
    before = _digest(store_dir)
    (store_dir / "experiments.toml").write_text(text)
    _assert_one_line_error(run_cli("launch", "--workers", "1", cwd=store_dir), expected)
    assert _digest(store_dir) == before


BAD_SELECTIONS = [
    (["--where", "architecture"], "--where architecture: expected KEY=VALUE"),
    (["--where", "foo=1"], "--where foo=1: foo: unknown key"),
    (["--where", "architecture.dpeth=2"], "--where architecture.dpeth: no run has architecture.dpeth"),
    (["--matrix", "mian"], "--matrix mian: no such matrix in experiments.toml; defined: main"),
    (["--where", "architecture=vit_tiny"],
     '--where architecture=vit_tiny: selects no run: architecture = "vit_tiny"; architectures are vit, cnn'),
    (["--matrix", "main", "--where", "seed=7"], "--where seed=7: selects no run in --matrix main: seed = 7; seeds are 0, 1"),
    (["--rerun", "everything"], "--rerun everything: choose among corrupt, failed, stale"),
    (["--workers", "0"], "--workers 0: must be at least 1"),
    (["--gpus", "2"], "--gpus 2: this machine has 0 NVIDIA GPU(s)"),
]


@pytest.mark.parametrize("args,expected", BAD_SELECTIONS, ids=[" ".join(a) for a, _ in BAD_SELECTIONS])
def test_bad_selection_gives_one_line_and_exit_2(store_dir, args, expected):
    if args[0] == "--gpus":
        from runner.backends.local import visible_gpus

        if visible_gpus():
            pytest.skip("this machine has a GPU")
    write_study(store_dir)
    before = _digest(store_dir)
    proc = cli("launch", *args, cwd=store_dir)
    _assert_one_line_error(proc, expected)
    assert _digest(store_dir) == before


def test_missing_file_is_a_clear_error(tmp_path):
    proc = run_cli("plan", "-f", "nope.toml", cwd=tmp_path)
    _assert_one_line_error(proc, "nope.toml: no such file")


def test_valid_study_parses_with_paths_relative_to_the_file(tmp_path):
    study = load_study(write_study(tmp_path / "sub"))
    assert study.runs_dir == (tmp_path / "sub" / "results" / "runs").resolve()
    assert study.store == f"sqlite:///{(tmp_path / 'sub' / 'results' / 'runner.db').resolve()}"
    assert [m.name for m in study.matrices] == ["main"]
    assert study.tables[0].scale == 100.0 and study.tables[0].decimals == 1


def test_the_projects_own_study_file_validates():
    from conftest import ROOT
    from runner.plan.expand import expand

    plan = expand(load_study(ROOT / "experiments.toml"))
    assert any("demo" in r.matrices for r in plan.runs)
