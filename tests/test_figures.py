"""Figures of ``runner report`` on the store of known numbers: the data each panel plots, the files
(PNG of the expected size, PDF), and redrawing only what changed."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from conftest import run_cli, write_study
from report_fixtures import STUDY, known_study, write_run

from runner.study.reports import FIGURE_KINDS

FIGURES = """
[[figure]]
name = "loss_vs_acc"
kind = "scatter"
x = "test_loss"
y = "test_acc"

[[figure]]
name = "acc_bars"
kind = "bar"
metric = "test_acc"
facet = "none"
group = "cell"
"""


def _data(study_dir: Path):
    from runner.commands import load, report_data

    return report_data(load(study_dir / "experiments.toml"))


def _figure(study_dir: Path, name: str):
    from analysis.report import figures_of
    from runner.commands import load

    return next(f for f in figures_of(load(study_dir / "experiments.toml").study) if f.name == name)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def known(tmp_path) -> Path:
    known_study(tmp_path, text=STUDY + FIGURES)
    return tmp_path


def test_learning_curves_are_the_mean_over_seeds_with_a_std_band(known):
    from analysis.figures import panels

    (digits,) = panels(_figure(known, "learning_curves"), _data(known))  # only vit/digits logged curves
    assert digits.stem == "learning_curves-digits" and digits.xlabel == "epoch" and digits.ylabel == "val_acc (%)"
    (vit,) = digits.series
    assert (vit.label, vit.n, vit.x) == ("vit", 3, [1.0, 2.0])
    assert vit.y == pytest.approx([60.0, 80.0])  # seeds: 50/60/70 %, then 80 % each
    assert vit.lo == pytest.approx([50.0, 80.0]) and vit.hi == pytest.approx([70.0, 80.0])  # ± sample std


def test_scatter_points_and_bars_aggregate_the_seeds_of_each_cell(known):
    from analysis.figures import panels

    data = _data(known)
    scatter = {p.stem: p for p in panels(_figure(known, "loss_vs_acc"), data)}
    assert set(scatter) == {"loss_vs_acc-digits", "loss_vs_acc-small"}
    points = {s.label: s for s in scatter["loss_vs_acc-digits"].series}
    assert set(points) == {"vit", "cnn"}  # deep/digits has no finished run
    assert points["vit"].x == pytest.approx([0.3]) and points["vit"].y == pytest.approx([92.0])
    assert points["vit"].y[0] - points["vit"].lo[0] == pytest.approx(2.0)  # ± std of the accuracies
    assert points["cnn"].n == 2
    (bars,) = panels(_figure(known, "acc_bars"), data)
    heights = {s.label: s.y[0] for s in bars.series}
    assert heights == pytest.approx({"vit/digits": 92.0, "cnn/digits": 96.0, "vit/small": 60.0, "cnn/small": 80.0})


def test_figures_are_png_and_pdf_files_of_the_expected_size(known):
    proc = run_cli("report", cwd=known)
    assert proc.returncode == 0, proc.stderr
    figures = known / "results" / "report" / "figures"
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert pngs == ["acc_bars.png", "learning_curves-digits.png", "loss_vs_acc-digits.png", "loss_vs_acc-small.png"]
    for png in figures.glob("*.png"):
        assert _png_size(png) == (800, 500), png.name
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    import matplotlib.image

    pixels = matplotlib.image.imread(figures / "learning_curves-digits.png")
    assert pixels.shape[:2] == (500, 800) and pixels.std() > 0.01  # an image, not a blank canvas


def test_a_second_report_draws_nothing_and_a_new_run_redraws_only_its_panels(known):
    first = run_cli("report", cwd=known)
    assert "4 figure(s), 4 drawn, 0 unchanged" in first.stderr, first.stderr
    figures = known / "results" / "report" / "figures"
    before = {p.name: p.stat().st_mtime_ns for p in figures.glob("*.png")}
    again = run_cli("report", cwd=known)
    assert "4 figure(s), 0 drawn, 4 unchanged" in again.stderr, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in figures.glob("*.png")} == before

    from runner.commands import load

    sel = load(known / "experiments.toml")
    deep_digits = next(r for r in sel.runs if r.label == "deep/digits/s0")
    write_run(sel.study, deep_digits, {"test_acc": 0.99, "test_loss": 0.05})
    third = run_cli("report", cwd=known)
    assert "4 figure(s), 2 drawn, 2 unchanged" in third.stderr, third.stderr  # loss_vs_acc-digits and acc_bars
    after = {p.name: p.stat().st_mtime_ns for p in figures.glob("*.png")}
    changed = {n for n in after if after[n] != before[n]}
    assert changed == {"loss_vs_acc-digits.png", "acc_bars.png"}


def test_the_study_accepts_exactly_the_kinds_and_aggregates_analysis_registers():
    """runner/study/reports.py spells the names out so that loading a study needs no analysis."""
    from analysis.figure_kinds import KINDS
    from analysis.tables import AGGREGATES
    from runner.study import reports

    assert reports.FIGURE_KINDS == tuple(KINDS)
    assert reports.AGGREGATES == tuple(AGGREGATES)


@pytest.mark.parametrize("kind", FIGURE_KINDS)
def test_every_kind_draws_its_panels_as_files_of_the_expected_size(tmp_path, kind):
    from analysis.figures import panels, render

    block = f'[[figure]]\nname = "every"\nkind = "{kind}"\n' + ('x = "test_loss"\n' if kind == "scatter" else "")
    known_study(tmp_path, text=STUDY + block)
    drawn = panels(_figure(tmp_path, "every"), _data(tmp_path))
    assert drawn and all(p.kind == kind and p.series for p in drawn)
    for p in drawn:
        png, pdf = render(p, tmp_path)
        assert _png_size(png) == (800, 500) and pdf.read_bytes().startswith(b"%PDF-"), p.stem


def test_a_figure_shows_the_best_groups_when_there_are_too_many(tmp_path):
    from analysis.figure_kinds import MAX_GROUPS
    from analysis.figures import panels

    lrs = ", ".join(f"{(i + 1) * 1e-4:.1e}" for i in range(MAX_GROUPS + 3))
    text = STUDY.replace('datasets = ["digits", "small"]\n', f'datasets = ["digits"]\nseeds = [0]\ngrid = {{ lr = [{lrs}] }}\n', 1)
    text = text[:text.index("[[table]]")] + '[[figure]]\nname = "bars"\nkind = "bar"\nwhere = { architecture = "vit" }\n'
    write_study(tmp_path, text)
    from runner.commands import load

    sel = load(tmp_path / "experiments.toml")
    vit = [r for r in sel.runs if r.architecture == "vit"]
    for i, run in enumerate(vit):
        write_run(sel.study, run, {"test_acc": i / 100})
    (panel,) = panels(_figure(tmp_path, "bars"), _data(tmp_path))
    assert len(panel.series) == MAX_GROUPS
    assert min(s.y[0] for s in panel.series) == pytest.approx(3.0)  # the 3 lowest of 15 are left out
    assert panel.note == f"the {MAX_GROUPS} of {MAX_GROUPS + 3} groups with the highest test_acc; narrow with --where"


def test_a_group_that_mixes_configurations_is_refused(tmp_path):
    tables = STUDY.index("\n[[table]]")  # its tables would mix the grid too: runner plan refuses those
    text = STUDY[:tables].replace('datasets = ["digits", "small"]\n', 'datasets = ["digits", "small"]\ngrid = { lr = [1e-3, 3e-3] }\n', 1)
    known_study(tmp_path, text=text + '\n[[figure]]\nname = "by_arch"\nkind = "bar"\ngroup = "architecture"\n')
    proc = run_cli("report", "--figure", "by_arch", "--out", "drawn", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "[[figure]] by_arch group: vit in digits holds 2 configurations" in proc.stderr


def test_cells_of_one_label_are_told_apart_not_refused(tmp_path):
    """The same architecture and dataset in two matrices with other recipes: two cells, one label."""
    text = STUDY[:STUDY.index("\n[[table]]")] + ('\n[[matrix]]\nname = "longer"\narchitectures = ["vit"]\n'
                                                'datasets = ["digits"]\nset = { epochs = 7 }\n')  # no table: it would mix them
    known_study(tmp_path, text=text)
    from runner.commands import load

    sel = load(tmp_path / "experiments.toml")
    longer = next(r for r in sel.runs if r.matrices == ("longer",) and r.seed == 0)
    write_run(sel.study, longer, {"test_acc": 0.99, "test_loss": 0.1, "params": 10}, curve=[0.9, 0.95])
    from analysis.figures import panels

    (digits,) = panels(_figure(tmp_path, "learning_curves"), _data(tmp_path))
    labels = sorted(s.label for s in digits.series)
    assert len(labels) == 2 and all(label.startswith("vit [") for label in labels), labels


def _boom(panel, out_dir):
    raise RuntimeError(f"cannot draw {panel.stem}")


def _drawn_files(figures: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(figures.iterdir()) if p.suffix in (".png", ".pdf")}


def test_panels_drawn_in_processes_are_the_files_one_process_draws(known, monkeypatch):
    """Four panels start a drawing process per core (when there are two); byte for byte what one
    process draws, and a panel that cannot be drawn fails the drawing instead of going missing."""
    import os

    from analysis import figures as F
    from analysis.report import figures_of

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: the panels are drawn in this process")
    data = _data(known)
    figs = figures_of(data.study)
    forks = []
    real = F.multiprocessing.get_context
    monkeypatch.setattr(F.multiprocessing, "get_context", lambda method: forks.append(method) or real(method))
    F.draw(figs, data, known / "pool")
    assert forks == ["fork"]
    monkeypatch.setattr(F, "MIN_PANELS_PER_PROCESS", 10_000)
    F.draw(figs, data, known / "one")
    pooled, alone = _drawn_files(known / "pool"), _drawn_files(known / "one")
    assert len(pooled) == 8 and pooled == alone

    monkeypatch.setattr(F, "MIN_PANELS_PER_PROCESS", 1)
    monkeypatch.setattr(F, "render", _boom)
    with pytest.raises(RuntimeError, match="cannot draw"):
        F.draw(figs, data, known / "failing")
    assert not (known / "failing" / ".drawn.json").exists()  # nothing recorded as drawn
