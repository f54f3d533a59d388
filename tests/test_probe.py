"""``runner probe``: attention maps, shape bias and inference time of digits-trained runs, computed
by real probe worker processes from the runs' saved weights, kept in the run folders and the
store, never recomputed, and tabled by ``runner report``."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch

from conftest import run_cli, write_study
from studies import CNN, VIT, study_toml

STUDY = study_toml(
    "probed", seeds=[0], defaults={"epochs": 8, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0},
    architectures={"vit": VIT | {"patch_size": 2, "depth": 2},
                   "quad": {"model": "conv_attention", "positional_encoding": "quadratic", "d_model": 16, "n_layers": 2,
                            "heads": 4, "dff": 32, "downsample": 1},
                   "cnn": CNN},
    tables=(), extra="""
[[override]]                     # only the CNN's accuracy matters (shape bias)
match = { architecture = ["vit", "quad"] }
set = { epochs = 2 }

[[probe]]
name = "attn"
kind = "attention_maps"
images = 3

[[probe]]
name = "speed"
kind = "inference_time"
match = { architecture = ["vit", "cnn"] }
batch_sizes = [1, 8]
warmup = 2
min_time_s = 0.05

[[probe]]
name = "shape"
kind = "shape_bias"
match = { architecture = "cnn" }
root = "cue-conflict"
""")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three runs on digits (a ViT, a conv-equivalent attention net, a CNN of ~97 % test accuracy)."""
    path = tmp_path_factory.mktemp("probed")
    write_study(path, STUDY)
    r = run_cli("launch", "--workers", "2", cwd=path)
    assert r.returncode == 0, r.stdout + r.stderr
    return path


def _results(path, probe):
    return {f.parent.parent.parent.name: f.parent for f in (path / "results" / "runs").glob(f"*/probes/{probe}-*/result.json")}


def _labels(path):
    return {p.name: json.loads((p / "run.json").read_text())["label"] for p in (path / "results" / "runs").iterdir()
            if (p / "run.json").exists()}


def test_attention_maps_of_trained_runs_rows_sum_to_one_figures_drawn_and_never_recomputed(trained):
    r = run_cli("probe", "attn", cwd=trained)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 probed" in r.stdout and "1 skipped (resnet18_cifar has no attention layer)" in r.stdout
    labels = _labels(trained)
    folders = {labels[k].split("/")[0]: v for k, v in _results(trained, "attn").items()}
    assert set(folders) == {"vit", "quad"}
    for arch, folder in folders.items():
        result = json.loads((folder / "result.json").read_text())
        assert result["summary"]["images"] == 3 and len(result["summary"]["layers"]) == 2
        with np.load(folder / "arrays.npz") as a:
            assert a["images"].shape == (3, 1, 8, 8)
            for i, layer in enumerate(result["summary"]["layers"]):
                prefix, (gr, gc) = layer["prefix"], layer["grid"]
                heads = 2 if arch == "vit" else 4
                assert a[f"query_{i}"].shape == a[f"mean_{i}"].shape == (3, heads, prefix + gr * gc)
                np.testing.assert_allclose(a[f"query_{i}"].sum(-1), 1.0, atol=1e-5)  # softmax rows
                np.testing.assert_allclose(a[f"mean_{i}"].sum(-1), 1.0, atol=1e-5)
                assert (a[f"distance_{i}"] > 0).all() and (a[f"distance_{i}"] < 8 * 2**0.5).all()
            assert ("gauss_centres" in a.files) == (arch == "quad")
        assert (arch == "vit") == (result["summary"]["layers"][0]["prefix"] == 1)  # the class token
        from PIL import Image

        with Image.open(folder / "query-0.png") as im:  # rows: 2 layers; columns: the image and each head
            from analysis.probe_figures import GAP, LABEL, TILE

            assert im.size == (LABEL + (heads + 1) * (TILE + GAP), LABEL + 2 * (TILE + GAP))
    assert (folders["quad"] / "gaussian-centres.png").stat().st_size > 5000
    assert not (folders["vit"] / "gaussian-centres.png").exists()
    with np.load(folders["quad"] / "arrays.npz") as a:
        assert a["gauss_centres"].shape == (2, 4, 2) and a["gauss_inv_cov"].shape == (2, 4, 2, 2)

    # in the store, and never recomputed for the same settings
    db = sqlite3.connect(trained / "results" / "runner.db")
    assert db.execute("select count(*) from mr_probes where probe = 'attn' and state = 'done'").fetchone()[0] == 2
    stamps = {k: (v / "result.json").stat().st_mtime_ns for k, v in folders.items()}
    again = run_cli("probe", "attn", cwd=trained)
    assert again.returncode == 0 and "0 probed, 2 already had it" in again.stdout, again.stdout + again.stderr
    assert stamps == {k: (v / "result.json").stat().st_mtime_ns for k, v in folders.items()}

    # other settings are another result: probed again, the earlier one kept beside it
    study = trained / "experiments.toml"
    text = study.read_text()
    study.write_text(text.replace("images = 3", "images = 1"))
    try:
        other = run_cli("probe", "attn", "--where", "architecture=vit", cwd=trained)
    finally:
        study.write_text(text)
    assert other.returncode == 0 and "1 probed, 0 already had it" in other.stdout, other.stdout + other.stderr
    vit_run = folders["vit"].parent.parent
    assert len(list(vit_run.glob("probes/attn-*/result.json"))) == 2
    assert db.execute("select count(*) from mr_probes where probe = 'attn'").fetchone()[0] == 3

    rep = run_cli("report", "--table", "probe_attn", cwd=trained)  # the block's current settings: 3 images
    assert rep.returncode == 0, rep.stderr
    first = json.loads((folders["vit"] / "result.json").read_text())["summary"]["mean_distance_px"]
    assert f"| vit/digits | 2 | {first[0]:.2f} | {first[1]:.2f} | 1 |" in rep.stdout
    assert "| quad/digits | 4 |" in rep.stdout and "cnn/digits" not in rep.stdout
    page = run_cli("report", cwd=trained)
    html = (trained / "results" / "report" / "index.html").read_text()
    assert page.returncode == 0 and 'id="probe-figures"' in html and "learned Gaussian attention centres" in html


def _cue_conflict(root, n=60):
    """Digits images as cue-conflict stimuli: the shape is the digit drawn, the texture label another
    digit (a digit's own label for every tenth image, which the bias must leave out)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    same = 0
    for i in range(n):
        s = int(d.target[i])
        t = s if i % 10 == 0 else (s + 3) % 10
        same += s == t
        (root / str(s)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * (255 / 16)).round().astype(np.uint8), mode="L").save(
            root / str(s) / f"{s}{i}-{t}{i}.png")
    return n - same


def test_shape_bias_on_a_generated_cue_conflict_folder(trained):
    folder = trained / "cue-conflict"
    shutil.rmtree(folder, ignore_errors=True)
    conflicting = _cue_conflict(folder)
    r = run_cli("probe", "shape", cwd=trained)
    assert r.returncode == 0, r.stdout + r.stderr
    (out,) = _results(trained, "shape").values()
    s = json.loads((out / "result.json").read_text())["summary"]
    assert s["images"] == 60 and s["conflicting"] == conflicting
    with np.load(out / "arrays.npz") as a:
        decision, shape, texture = list(a["decision"]), list(a["shape"]), list(a["texture"])
    pairs = [(d, sh, t) for d, sh, t in zip(decision, shape, texture) if sh != t]
    shape_hits, texture_hits = sum(d == sh for d, sh, _ in pairs), sum(d == t for d, _, t in pairs)
    assert s["shape_bias"] == pytest.approx(shape_hits / (shape_hits + texture_hits))
    # a CNN that reads digits decides by the digit drawn: mostly shape, seldom the other label
    assert s["shape_match"] > 0.8 and s["texture_match"] < 0.1 and s["shape_bias"] > 0.85
    rep = run_cli("report", "--table", "probe_shape", "--format", "csv", cwd=trained)
    assert rep.returncode == 0 and f"cnn/digits,{100 * s['shape_bias']:.1f}" in rep.stdout, rep.stdout + rep.stderr
    drawn = run_cli("report", "--table", "probe_shape", "--out", "paper", cwd=trained)  # filtered: writes only with --out
    assert drawn.returncode == 0, drawn.stderr
    assert (trained / "paper" / "figures" / "probe_shape.png").stat().st_size > 5000  # per category


def test_a_category_that_is_no_class_of_the_runs_dataset_is_refused_before_any_worker(trained):
    cat = trained / "cue-conflict" / "cat"
    cat.mkdir(parents=True)
    shutil.copy(next((trained / "cue-conflict" / "3").iterdir()), cat / "cat1-3.png")
    try:
        r = run_cli("probe", "shape", "--force", cwd=trained)
    finally:
        shutil.rmtree(cat)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.strip() == ("experiments.toml: [[probe]] shape classes: cnn/digits/s0: category cat: cat not a "
                                "class of the run's dataset (0, 1, 2, 3, 4, 5, 6, 7, 8, 9); map it with "
                                'classes = { cat = ["<class name>", ...] }')


def test_shape_bias_counts_only_conflicting_images_and_maps_categories_to_classes():
    from runner.probes.cue_conflict import StimuliError, category_classes, decide, shape_bias

    got = shape_bias(decisions=["cat", "cat", "dog", "car", "cat", "dog"],
                     shapes=["cat", "cat", "cat", "cat", "dog", "dog"],
                     textures=["dog", "car", "dog", "dog", "cat", "dog"])
    # the last image has one cue only; of the other five: shape x2, texture (dog, cat) x2, neither x1
    assert got == {"shape_bias": 0.5, "shape_match": 0.4, "texture_match": 0.4, "conflicting": 5,
                   "cue_decisions": 4, "images": 6}
    groups = category_classes(("cat", "dog"), ("tabby", "siamese", "beagle", "dog"), {"cat": ["tabby", "siamese"]})
    assert groups == [[0, 1], [3]]
    # the mean over a category's classes decides: cat (0.3 + 0.3) / 2 = 0.3 < dog 0.35
    assert list(decide(np.array([[0.3, 0.3, 0.05, 0.35]]), groups)) == [1]
    with pytest.raises(StimuliError, match='category dog: dog not a class.*classes = { dog = '):
        category_classes(("dog",), ("tabby", "beagle"), {})


def test_inference_time_per_batch_size_in_the_store_and_the_report(trained):
    r = run_cli("probe", "speed", "--threads", "2", cwd=trained)
    assert r.returncode == 0 and "2 probed" in r.stdout, r.stdout + r.stderr
    db = sqlite3.connect(trained / "results" / "runner.db")
    rows = db.execute("select summary from mr_probes where probe = 'speed'").fetchall()
    assert len(rows) == 2
    for (summary,) in rows:
        batches = json.loads(summary)["batches"]
        assert [b["batch_size"] for b in batches] == [1, 8]
        for b in batches:
            assert b["iters"] >= 10 and b["latency_ms"] > 0
            assert b["images_per_s"] == pytest.approx(1000 * b["batch_size"] / b["latency_ms"])
    rep = run_cli("report", "--table", "probe_speed", cwd=trained)
    assert rep.returncode == 0, rep.stderr
    assert "| cell | device | img/s @1 | ms @1 | img/s @8 | ms @8 | runs |" in rep.stdout
    assert "| vit/digits | cpu, 2 threads |" in rep.stdout and "| cnn/digits | cpu, 2 threads |" in rep.stdout
    assert "quad/digits" not in rep.stdout  # the block's match leaves it out

    # the folders are the journal: a rebuilt index has the probes again, and `runner show` lists them
    assert run_cli("sync", "--rebuild", cwd=trained).returncode == 0
    assert db.execute("select count(*) from mr_probes where probe = 'speed'").fetchone()[0] == 2
    cnn = next(k for k, v in _labels(trained).items() if v.startswith("cnn/"))
    show = run_cli("show", cnn, cwd=trained)
    assert "probe speed (inference_time, settings " in show.stdout and "): done on cpu" in show.stdout

    # a probe that fails says why, exits 1, and keeps the result it had
    weights = trained / "results" / "runs" / cnn / "model.pt"
    weights.rename(weights.with_suffix(".moved"))
    try:
        bad = run_cli("probe", "speed", "--force", "--where", "architecture=cnn", cwd=trained)
    finally:
        weights.with_suffix(".moved").rename(weights)
    assert bad.returncode == 1 and "failed cnn/digits/s0: FileNotFoundError: " in bad.stdout, bad.stdout + bad.stderr
    assert "the run has no saved weights" in bad.stdout
    assert db.execute("select state from mr_probes where probe = 'speed' and run_id = ?", (cnn,)).fetchone() == ("done",)


def test_a_missing_cue_conflict_folder_is_one_line_with_the_layout_and_exit_2(tmp_path):
    write_study(tmp_path, STUDY)
    r = run_cli("probe", "shape", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    line, = r.stderr.strip().splitlines()
    assert line.startswith("experiments.toml: [[probe]] shape root: ") and "no cue-conflict folder" in line
    assert "<shape>/<shape><n>-<texture><m>.png" in line


@pytest.mark.parametrize("block, message", [
    ('kind = "saliency"', 'kind: expected one of attention_maps, inference_time, shape_bias, got "saliency"'),
    ('kind = "attention_maps"\nquery = [3]', "query: expected \"center\", \"cls\" or an image pixel [row, col]"),
    ('kind = "attention_maps"\nmatch = { depth = 2 }', "match depth: unknown key"),
    ('kind = "inference_time"\nbatch_sizes = [8, 8]', "batch_sizes: expected distinct batch sizes"),
    ('kind = "shape_bias"', "root: required key is missing"),
])
def test_bad_probe_blocks_are_refused_at_plan_time(tmp_path, block, message):
    write_study(tmp_path, STUDY.split("[[probe]]")[0] + f'[[probe]]\nname = "p"\n{block}\n')
    r = run_cli("plan", cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_an_unknown_kind_is_one_line_naming_the_file_the_block_and_the_registered_kinds():
    from runner.errors import SpecError
    from runner.study.probes import parse_probes

    for body, where in [({"name": "p", "kind": "saliency"}, "[[probe]] p"), ({"kind": ["x"]}, "[[probe]] #1")]:
        with pytest.raises(SpecError) as e:
            parse_probes([body], "experiments.toml", lambda *a: None)
        got = json.dumps(body["kind"])
        assert str(e.value) == (f"experiments.toml: {where} kind: expected one of attention_maps, inference_time, "
                                f"shape_bias, got {got}")


def test_every_probe_kind_has_a_file_of_its_own_and_its_report():
    from pathlib import Path

    from analysis.probe_figures import FIGURES
    from analysis.probe_tables import TABLES
    from runner.probes.kinds import KINDS, base

    assert set(TABLES) == set(KINDS) and set(FIGURES) == set(KINDS)  # a figure function, or None said outright
    for name, kind in KINDS.items():
        assert kind.name == name and issubclass(kind.settings, base.Settings)
        assert Path(base.__file__).with_name(f"{name}.py").exists()  # where the worker's errors send a developer
        assert kind.results and len(set(kind.results)) == len(kind.results)


def test_the_settings_hashes_of_existing_kinds_are_unchanged():
    """Results are found by this hash: a change would probe every run again beside its old results."""
    import tomllib

    from runner.study.probes import parse_probes

    got = {p.name: (p.key, p.settings) for p in parse_probes(tomllib.loads(STUDY)["probe"], "f", lambda *a: None)}
    assert got == {
        "attn": ("3561dc14ae52", {"images": 3, "split": "test", "query": "center"}),
        "speed": ("074a948a47f0", {"batch_sizes": [1, 8], "warmup": 2, "min_time_s": 0.05, "min_iters": 10,
                                   "precision": "run"}),
        "shape": ("6e65c7dfbdfc", {"root": "cue-conflict", "classes": {}, "batch_size": 64}),
    }


def test_the_worker_runs_a_task_by_its_kind_and_refuses_an_unknown_kind(monkeypatch, tmp_path):
    from runner.probes import worker
    from runner.probes.kinds import KINDS
    from runner.probes.kinds.base import ProbeKind, Settings

    seen = []

    def compute(model, config, settings, device, study_dir):
        seen.append((model, settings, study_dir))
        return {"x": 1}, {"a": np.zeros(1)}

    monkeypatch.setitem(KINDS, "fake", ProbeKind("fake", Settings, compute, results=("x",)))
    summary, arrays = worker.run_task("model", {}, {"kind": "fake", "settings": {"s": 1}}, "cpu", tmp_path)
    assert summary == {"x": 1} and list(arrays) == ["a"] and seen == [("model", {"s": 1}, tmp_path)]
    with pytest.raises(LookupError, match="unknown probe kind 'saliency'; registered: attention_maps, fake, "
                                          "inference_time, shape_bias$"):
        worker.run_task("model", {}, {"kind": "saliency", "settings": {}}, "cpu", tmp_path)
    # a kind that records less than it declares fails its task, not its report
    monkeypatch.setitem(KINDS, "fake", ProbeKind("fake", Settings, compute, results=("x", "y")))
    with pytest.raises(RuntimeError, match=r"the fake probe returned no y \(runner/probes/kinds/fake.py\)"):
        worker.run_task("model", {}, {"kind": "fake", "settings": {}}, "cpu", tmp_path)


def _families():
    from architectures import create_model

    small = dict(num_classes=10, in_chans=1, img_size=8)
    yield "vit", create_model("vit", patch_size=2, dim=16, depth=2, heads=2, mlp_dim=32, **small)
    yield "dual_attention", create_model("dual_attention", sa=1, ra=1, symbol_type="position_relative", n_layers=2,
                                         d_model=16, dff=32, patch_size=2, **small)
    yield "quadratic", create_model("conv_attention", positional_encoding="quadratic", d_model=16, n_layers=2,
                                    heads=4, dff=32, downsample=1, **small)
    yield "learned_content", create_model("conv_attention", positional_encoding="learned_2d", use_content=True,
                                          d_model=16, n_layers=1, heads=2, dff=32, downsample=1, **small)
    san = dict(layout="san10", stem_width=32, widths=[32, 32, 32, 32, 32], kernels=[3, 3, 3, 3, 3])
    yield "san_pairwise", create_model("san_pairwise", **san, **small)
    yield "timm_vit", create_model("timm:vit_tiny_patch16_224", patch_size=2, embed_dim=16, depth=2, num_heads=2,
                                   **small)


@pytest.mark.parametrize("name, model", list(_families()))
def test_attention_rows_of_every_family_are_distributions_over_the_keys(name, model):
    from architectures.attention import attention_rows

    torch.manual_seed(0)
    rows = attention_rows(model.eval(), torch.randn(2, 1, 8, 8), query=(7, 0))
    assert rows
    for r in rows:
        n_keys = r.prefix + r.grid[0] * r.grid[1]
        assert r.query.shape[0] == 2 and r.query.shape[-1] == n_keys and r.mean.shape == r.query.shape
        torch.testing.assert_close(r.query.sum(-1), torch.ones(r.query.shape[:2]))
        torch.testing.assert_close(r.mean.sum(-1), torch.ones(r.mean.shape[:2]))
        row, col = divmod(r.query_index - r.prefix, r.grid[1])
        assert (row, col) == (7 * r.grid[0] // 8, 0)  # the bottom-left pixel's token


def test_the_probabilities_read_are_the_ones_the_layer_applies():
    """ViT and dual attention run SDPA, which never shows its weights: the weights a probe reads,
    times the values, must give the layer's own output."""
    from architectures import create_model

    torch.manual_seed(0)
    vit = create_model("vit", patch_size=2, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=10, in_chans=1,
                       img_size=8).eval()
    attn, x = vit.blocks[0].attn, torch.randn(2, 17, 16)
    v = attn.qkv(x).view(2, 17, 3, 2, 8).permute(2, 0, 3, 1, 4)[2]
    mixed = (attn.attention_probs(x) @ v).transpose(1, 2).reshape(2, 17, 16)
    torch.testing.assert_close(attn.proj(mixed), attn(x))
    dat = create_model("dual_attention", sa=2, ra=0, ra_type="NA", symbol_type="NA", n_layers=1, d_model=16, dff=32, patch_size=2, num_classes=10,
                       in_chans=1, img_size=8).eval()
    sa = dat.blocks[0].attn.self_attn
    v = sa.qkv(x).split(sa.splits, dim=-1)[2].view(2, 17, 2, 8).transpose(1, 2)
    mixed = (dat.blocks[0].attn.attention_probs(x) @ v).transpose(1, 2).reshape(2, 17, 16)
    torch.testing.assert_close(sa.wo(mixed), sa(x))
