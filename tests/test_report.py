"""``runner report`` on a store of known numbers (tests/report_fixtures.py): aggregation over seeds,
bold, marks and notes, and each format's exact output against golden files.

Golden files live in tests/golden/report/; after an intended change of output, regenerate them
with ``UPDATE_GOLDEN=1 python -m pytest tests/test_report.py`` and read the diff.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli, write_study
from report_fixtures import STUDY, known_study

GOLDEN = Path(__file__).with_name("golden") / "report"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.fixture
def known(tmp_path) -> Path:
    known_study(tmp_path)
    return tmp_path


def _report(study_dir: Path, *where: str):
    from runner.commands import load, report

    return report(load(study_dir / "experiments.toml", where=where), ["runner", "report"], with_figures=False)


def _cells(result) -> dict:
    return {(r[0], c[0]): cell for (r, c), cell in result.cells.items()}


def test_mean_and_sample_std_over_the_seeds_of_each_cell(known):
    acc = _cells(_report(known).tables[0])
    assert acc[("vit", "digits")].value == pytest.approx(0.92)
    assert acc[("vit", "digits")].std == pytest.approx(0.02)  # sample std of 0.90, 0.92, 0.94 (n-1)
    assert acc[("vit", "small")].std == pytest.approx(0.1)
    assert acc[("cnn", "digits")].std == pytest.approx(0.0141421356)  # two seeds: |0.95 - 0.97| / sqrt 2
    assert (acc[("cnn", "digits")].n, acc[("cnn", "digits")].planned) == (2, 3)
    assert acc[("deep", "digits")].value is None and acc[("deep", "digits")].finished == 0
    assert acc[("deep", "small")].value is None and acc[("deep", "small")].finished == 1  # done, but no test_acc


def test_other_aggregates_median_min_max_last(known):
    text = STUDY + "".join(f'\n[[table]]\nname = "{a}"\nmetric = "test_loss"\naggregate = "{a}"\n'
                           for a in ("min", "max", "last"))
    write_study(known, text)
    rep = _report(known)
    by_name = {t.table.name: _cells(t) for t in rep.tables}
    assert by_name["loss_median"][("vit", "digits")].value == pytest.approx(0.30)
    assert by_name["min"][("vit", "digits")].value == pytest.approx(0.20)
    assert by_name["max"][("vit", "digits")].value == pytest.approx(0.40)
    assert by_name["last"][("vit", "digits")].value == pytest.approx(0.40)  # seed 2 finished last
    assert by_name["max"][("vit", "digits")].std is None  # only a mean carries ± std


def test_the_best_of_each_column_is_bold_in_the_metrics_direction(known):
    acc, loss = _report(known).tables[0], _report(known).tables[2]
    assert {(r[0], c[0]) for r, c in acc.bold} == {("cnn", "digits"), ("cnn", "small")}  # higher accuracy
    assert {(r[0], c[0]) for r, c in loss.bold} == {("cnn", "digits"), ("cnn", "small")}  # lower loss


def test_missing_partial_and_mixed_hardware_cells_are_marked_and_counted(known):
    md = {t.table.name: t for t in _report(known).tables}["accuracy"]
    from analysis.formats import cell_text

    texts = {(r[0], c[0]): cell_text(md, r, c) for r in md.rows for c in md.columns}
    assert texts[("deep", "digits")] == "—" and texts[("deep", "small")] == "—"
    assert texts[("cnn", "digits")] == "96.0 ± 1.4 (n=2/3)"
    assert texts[("vit", "small")] == "60.0 ± 10.0†"
    notes = md.notes()
    assert "—: 1 cell(s) with no finished run yet" in notes
    assert "—: 1 cell(s) whose finished runs have no test_acc in their summary" in notes
    assert any(n.startswith("†: 1 cell(s) whose seeds ran on different hardware (NVIDIA A100") for n in notes)


def test_where_restricts_the_tables(known):
    rep = _report(known, "dataset=small")
    acc = rep.tables[0]
    assert [c[0] for c in acc.columns] == ["small"]
    assert _cells(acc)[("vit", "small")].value == pytest.approx(0.6)


def test_a_table_the_selection_leaves_empty_says_so(known):
    splits = {t.table.name: t for t in _report(known, "dataset=small").tables}["splits"]  # splits: digits only
    assert not splits.cells
    assert splits.notes() == ["empty: the selection (--matrix, --where) holds none of this table's runs; "
                              "`runner report` shows them"]


def test_markdown_latex_csv_and_runs_match_their_golden_files(known):
    from analysis.formats import sources_csv, to_csv
    from analysis.report import render

    rep = _report(known)
    _golden("tables.md", render(rep, "md"))
    _golden("tables.tex", render(rep, "latex"))
    _golden("tables.csv", to_csv(rep.tables))
    _golden("accuracy.runs.csv", sources_csv(rep.tables[:1]))


def test_the_html_page_matches_its_golden_file(known):
    from analysis.report import render

    page = render(_report(known), "html", generated="2026-12-01 12:00:00 UTC")
    _golden("index.html", page.replace(str(known.resolve()), "<study>"))


def test_the_csv_holds_the_numbers_as_shown(known):
    from analysis.formats import to_csv

    rows = list(csv.DictReader(io.StringIO(to_csv(_report(known).tables[:1]))))
    vit = next(r for r in rows if r["row"] == "vit" and r["column"] == "digits")
    assert (float(vit["value"]), float(vit["std"]), vit["n"], vit["best"]) == (92.0, 2.0, "3", "0")


def test_published_numbers_print_beside_ours_in_every_format(known):
    from analysis.formats import to_csv, to_html_table, to_latex, to_markdown

    write_study(known, STUDY + '\n[[table]]\nname = "paper"\nwhere = { matrix = "main" }\n'
                               'published = { vit = { digits = "91.5 ± 0.3" }, deep = { small = "80.0" } }\n'
                               'published_source = "Someone et al. 2024, Table 1"\n')
    result = next(t for t in _report(known).tables if t.table.name == "paper")
    markdown = to_markdown(result, "runner report")
    assert "| 92.0 ± 2.0 [91.5 ± 0.3] |" in markdown  # ours (mean ± std of 90, 92, 94), then theirs
    assert "— [80.0]" in markdown  # a cell with nothing finished still shows the paper's number
    assert "[…]: the published number (Someone et al. 2024, Table 1), beside ours" in markdown
    assert r"{\scriptsize [91.5 $\pm$ 0.3]}" in to_latex(result, "runner report")
    assert "92.0 ± 2.0 [91.5 ± 0.3]" in to_html_table(result, "runner report")
    rows = {(r["row"], r["column"]): r for r in csv.DictReader(io.StringIO(to_csv([result])))}
    assert rows[("vit", "digits")]["published"] == "91.5 ± 0.3" and rows[("cnn", "digits")]["published"] == ""


@pytest.mark.parametrize("block, expected", [
    ('[[table]]\nname = "bad"\nrows = "architecture.depthh"', "[[table]] bad rows: architecture.depthh: no run has "
                                                               "architecture.depthh; architecture keys: "),
    ('[[table]]\nname = "bad"\nwhere = { epochz = 3 }', None),  # not even a key: refused when the study loads
    ('[[figure]]\nname = "bad"\nkind = "bar"\ngroup = "dataset.subsett"', "[[figure]] bad group: dataset.subsett: no run has"),
])
def test_a_key_no_run_has_is_a_one_line_error(tmp_path, block, expected):
    write_study(tmp_path, STUDY + "\n" + block + "\n")
    proc = run_cli("report", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected is None or expected in proc.stderr, proc.stderr


def test_a_table_cell_that_mixes_configurations_is_refused(tmp_path):
    text = STUDY.replace('datasets = ["digits", "small"]\n', 'datasets = ["digits", "small"]\ngrid = { lr = [1e-3, 3e-3] }\n', 1)
    write_study(tmp_path, text)
    proc = run_cli("report", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("experiments.toml: [[table]] accuracy rows and columns: the table cell vit / digits holds "
                           "2 configurations")
    assert "differ in lr; add that key to rows or columns" in line


@pytest.mark.parametrize("block, expected", [
    ('metrics = ["test_acc", "test_loss"]', 'metrics: 2 metrics need "metric" in rows or columns'),
    ('metric = "test_acc"\nmetrics = ["test_acc"]', "metric and metrics: give one metric"),
    ('aggregate = "average"', 'aggregate: expected one of "mean", "median", "min", "max" or "last"'),
    ('scale = { val_acc = 100.0 }', "scale.val_acc: not a metric of this table; its metrics: test_acc"),
    ('rows = "dataset"', "rows and columns: each key may appear once"),
    ('decimals = 12', "decimals: must be between 0 and 8"),
    ('published = { vitt = { digits = "90.1" } }', 'published."vitt": no such row in this table; its rows are '),
    ('published = { vit = { digitz = "90.1" } }', 'published."vit"."digitz": no such column in this table; its columns '
                                                 'are digits, small'),
    ('published_source = "Someone 2024"', "published_source: names the source of published numbers"),
])
def test_bad_table_blocks_are_one_line_errors(tmp_path, block, expected):
    write_study(tmp_path, STUDY + f'\n[[table]]\nname = "bad"\n{block}\n')
    proc = run_cli("plan", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "[[table]] bad" in proc.stderr and expected in proc.stderr, proc.stderr


@pytest.mark.parametrize("block, expected", [
    ('kind = "curves"\nx = "params"', "x: only a scatter has x and y"),
    ('kind = "pie"', 'kind: expected one of "curves", "scatter" or "bar"'),
    ('kind = "scatter"\nmetric = "test_acc"', "metric: a scatter takes x and y"),
    ('kind = "bar"\nfacet = "cell"', 'facet: "cell" would draw one figure per configuration'),
    ('kind = "bar"\nwhere = { matrix = "nope" }', 'matrix: unknown matrix "nope"'),
])
def test_bad_figure_blocks_are_one_line_errors(tmp_path, block, expected):
    write_study(tmp_path, STUDY + f'\n[[figure]]\nname = "bad"\n{block}\n')
    proc = run_cli("plan", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "[[figure]] bad" in proc.stderr and expected in proc.stderr, proc.stderr


# ---------------------------------------------------------------- the command line


def test_report_prints_markdown_and_writes_every_format(known):
    proc = run_cli("report", cwd=known)
    assert proc.returncode == 0, proc.stderr
    out = known / "results" / "report"
    assert proc.stdout == "\n".join((out / f"{n}.md").read_text() for n in ("accuracy", "splits", "loss_median"))
    for name in ("accuracy", "splits", "loss_median"):
        for suffix in (".md", ".tex", ".csv", ".runs.csv"):
            assert (out / f"{name}{suffix}").stat().st_size > 0
    page = (out / "index.html").read_text()
    assert page.count("<table") == 3 and 'src="data:image/png;base64,' in page  # self-contained
    assert "learning_curves-digits.png" in {p.name for p in (out / "figures").iterdir()}
    assert "3 table(s)" in proc.stderr and "index.html" in proc.stderr


def test_format_runs_table_and_out_options(known, tmp_path):
    latex = run_cli("report", "--table", "accuracy", "--format", "latex", "--out", str(tmp_path / "paper"), cwd=known)
    assert latex.returncode == 0, latex.stderr
    assert latex.stdout.startswith("% Test accuracy (%)\n% regenerate: runner report --table accuracy --format latex")
    assert latex.stdout == (tmp_path / "paper" / "accuracy.tex").read_text()
    assert not (tmp_path / "paper" / "figures").exists()  # --table alone: no figures, no page
    runs = run_cli("report", "--table", "accuracy", "--runs", "--where", "architecture=vit", cwd=known)
    rows = list(csv.DictReader(io.StringIO(runs.stdout)))
    assert len(rows) == 6 and {r["label"].split("/")[0] for r in rows} == {"vit"}
    assert sorted(float(r["value"]) for r in rows if r["column"] == "digits") == [0.9, 0.92, 0.94]
    where = run_cli("report", "--table", "accuracy", "--where", "architecture=vit", cwd=known)
    assert "regenerate: `runner report --where architecture=vit --table accuracy`" in where.stdout
    bad = run_cli("report", "--table", "nope", cwd=known)
    assert bad.returncode == 2 and "--table nope: no such [[table]]" in bad.stderr
    bad = run_cli("report", "--format", "docx", cwd=known)
    assert bad.returncode == 2 and "--format docx: choose one of md, latex, csv, html" in bad.stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_filtered_report_prints_and_leaves_the_report_folder_byte_identical(known, tmp_path):
    """results/report/ is the paper: only a whole `runner report` writes it. A --table, --where or
    --matrix report prints what was asked and writes nothing; --out DIR writes that selection there."""
    from conftest import cli

    assert cli("report", "--no-figures", cwd=known).returncode == 0
    paper = known / "results" / "report"
    before = _files(paper)
    for args in (["--table", "accuracy"], ["--where", "architecture=vit"], ["--matrix", "main", "--format", "latex"],
                 ["--where", "dataset=small", "--format", "html"], ["--table", "splits", "--format", "csv"]):
        proc = cli("report", *args, cwd=known)
        assert proc.returncode == 0 and proc.stdout.strip(), (args, proc.stderr)
        assert proc.stderr.startswith("nothing written: a report filtered by"), proc.stderr
    assert _files(paper) == before
    vit = cli("report", "--where", "architecture=vit", "--out", str(tmp_path / "vit"), cwd=known)
    assert vit.returncode == 0 and "written to" in vit.stderr
    assert "| cnn |" not in (tmp_path / "vit" / "accuracy.md").read_text()
    assert "| cnn |" not in (tmp_path / "vit" / "index.html").read_text()  # the page: the same selection
    figure = cli("report", "--figure", "learning_curves", cwd=known)
    assert figure.returncode == 2 and figure.stderr.startswith("--figure learning_curves: a figure is a file")
    assert _files(paper) == before


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def test_check_fails_on_missing_or_stale_cells_and_passes_when_all_is_done_at_head(tmp_path):
    write_study(tmp_path, STUDY)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "experiments.toml")
    _git(tmp_path, "commit", "-qm", "study")
    head = _git(tmp_path, "rev-parse", "HEAD")
    known_study(tmp_path, commit=head)
    proc = run_cli("report", "--check", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "accuracy: deep / digits: 3 of 3 seed(s) not done" in proc.stdout
    assert "accuracy: cnn / digits: 1 of 3 seed(s) not done" in proc.stdout
    assert not (tmp_path / "results" / "report").exists()  # --check writes nothing

    # every declared cell done, at HEAD: exit 0
    from report_fixtures import write_run
    from runner.commands import load

    sel = load(tmp_path / "experiments.toml")
    for run in sel.runs:
        folder = sel.study.runs_dir / run.id
        if not (folder / "summary.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            write_run(sel.study, run, {"test_acc": 0.5, "test_loss": 1.0}, commit=head)
    proc = run_cli("report", "--check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip() == "report check: all 18 cell(s) of 3 table(s) done with the code installed now"

    # these runs recorded no code fingerprint (as an older runner's): a new commit makes every cell stale
    (tmp_path / "notes.txt").write_text("x")
    _git(tmp_path, "add", "notes.txt")
    _git(tmp_path, "commit", "-qm", "more")
    proc = run_cli("report", "--check", "--table", "accuracy", cwd=tmp_path)
    assert proc.returncode == 1
    assert "accuracy: vit / digits: 3 seed(s) stale (trained with other code than now)" in proc.stdout
    assert (f"stale: 18 run(s) recorded before code fingerprints, so judged by its git commit: done at {head[:12]}, "
            f"HEAD is {_git(tmp_path, 'rev-parse', 'HEAD')[:12]}") in proc.stdout
    report = run_cli("report", "--table", "accuracy", cwd=tmp_path).stdout
    assert "6 cell(s) hold stale runs, trained with other code than now" in report


def test_report_without_a_store_shows_every_cell_missing(tmp_path):
    write_study(tmp_path, STUDY)
    proc = run_cli("report", "--table", "accuracy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| vit | — | — |" in proc.stdout and "—: 6 cell(s) with no finished run yet" in proc.stdout
    assert json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)["counts"] == {"missing": 18}
