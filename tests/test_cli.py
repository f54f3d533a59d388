"""The slice end to end, as a user types it: plan -> launch -> status -> report -> launch again."""

from __future__ import annotations

import json
import platform
import re

import pytest

from conftest import cli, run_cli, trained_by_other_code


def test_plan_launch_status_report_relaunch(tiny):
    plan = run_cli("plan", cwd=tiny)
    assert plan.returncode == 0, plan.stderr
    assert "vit/digits" in plan.stdout and "cnn/digits" in plan.stdout and "4 missing" in plan.stdout
    assert not (tiny / "results").exists()  # plan writes nothing

    launch = run_cli("launch", "--workers", "2", cwd=tiny)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    assert "4 done, 0 failed" in launch.stdout

    status = run_cli("status", "--json", cwd=tiny)
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["counts"] == {"done": 4}
    assert {r["label"] for r in view["runs"]} == {"vit/digits/s0", "vit/digits/s1", "cnn/digits/s0", "cnn/digits/s1"}
    for r in view["runs"]:
        assert set(r) >= {"id", "label", "state", "matrix", "summary", "reason"}
        assert 0.0 <= r["summary"]["test_acc"] <= 1.0 and r["matrix"] == ["main"]

    report = run_cli("report", cwd=tiny)
    assert report.returncode == 0, report.stderr
    accs = {r["label"]: r["summary"]["test_acc"] for r in view["runs"]}
    import statistics

    vit = [accs["vit/digits/s0"] * 100, accs["vit/digits/s1"] * 100]
    expected = f"{statistics.mean(vit):.1f} ± {statistics.stdev(vit):.1f}"
    assert re.search(rf"^\| vit \| (\*\*)?{re.escape(expected)}(\*\*)? \|$", report.stdout, re.M), report.stdout
    assert (tiny / "results" / "report" / "accuracy.md").read_text() in report.stdout + "\n"

    summaries = {p: p.stat().st_mtime_ns for p in (tiny / "results" / "runs").glob("*/summary.json")}
    again = run_cli("launch", "--workers", "2", cwd=tiny)
    assert again.returncode == 0 and "nothing to run: 4 of 4" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in summaries} == summaries

    plan = run_cli("plan", "--json", cwd=tiny)
    runs = json.loads(plan.stdout)["runs"]
    assert all(r["state"] == "done" and "config" in r and r["cell"] for r in runs)

    rid = runs[0]["id"]
    show = run_cli("show", rid[:6], "--json", cwd=tiny)
    info = json.loads(show.stdout)
    assert info["id"] == rid and info["attempts"][0]["status"] == "done"
    prov = info["attempts"][0]
    assert prov["torch"].startswith("2.14") and prov["python"] and prov["host"] and "runner" in prov["command"]
    assert info["last_metrics"]["val_acc"] == info["summary"]["val_acc"]


def test_where_restricts_launch_and_report(tiny):
    launch = run_cli("launch", "--workers", "1", "--where", "architecture=cnn", "--where", "seed=0", cwd=tiny)
    assert launch.returncode == 0 and "1 done" in launch.stdout, launch.stdout + launch.stderr
    view = json.loads(run_cli("status", "--json", cwd=tiny).stdout)
    assert view["counts"] == {"done": 1, "missing": 3}
    report = run_cli("report", cwd=tiny).stdout
    assert "| vit | — |" in report and "(n=1/2)" in report and "1 cell(s) with no finished run yet" in report


def test_a_failing_run_is_reported_and_the_rest_continue(tiny):
    text = (tiny / "experiments.toml").read_text()
    # a value `runner plan` cannot judge (timm takes the keyword) and training refuses
    text = text.replace('model = "resnet18_cifar"\nwidth = 4', 'model = "timm:resnet18"\ndrop_rate = 1.5')
    (tiny / "experiments.toml").write_text(text)
    launch = run_cli("launch", "--workers", "1", cwd=tiny)
    assert launch.returncode == 1
    assert "2 done, 2 failed" in launch.stdout
    assert "dropout probability" in launch.stderr
    status = run_cli("status", "--json", cwd=tiny)
    assert status.returncode == 1
    view = json.loads(status.stdout)
    assert view["counts"] == {"done": 2, "failed": 2}
    failed = [r for r in view["runs"] if r["state"] == "failed"]
    assert all("dropout probability" in r["reason"] and "\n" not in r["reason"] for r in failed)
    # one worker ran all four: it is reused after a finished run and replaced after a failed one
    attempts = sorted((a for r in view["runs"] for a in
                       json.loads(run_cli("show", r["id"], "--json", cwd=tiny).stdout)["attempts"]),
                      key=lambda a: a["started_at"])
    for before, after in zip(attempts, attempts[1:]):
        assert (after["pid"] != before["pid"]) == (before["status"] == "failed"), attempts
    # a plain relaunch leaves failures alone; --rerun failed tries them again
    assert "nothing to run" in run_cli("launch", "--workers", "1", cwd=tiny).stdout
    again = run_cli("launch", "--workers", "1", "--rerun", "failed", cwd=tiny)
    assert "0 done, 2 failed" in again.stdout
    info = json.loads(run_cli("show", failed[0]["id"], "--json", cwd=tiny).stdout)
    assert [a["status"] for a in info["attempts"]] == ["failed", "failed"]
    assert "Traceback" in info["attempts"][-1]["traceback"]


def test_sync_rebuild_restores_the_index(tiny):
    assert run_cli("launch", "--workers", "2", "--where", "seed=0", cwd=tiny).returncode == 0
    before = json.loads(run_cli("status", "--json", cwd=tiny).stdout)
    (tiny / "results" / "runner.db").unlink()
    for extra in ("-wal", "-shm"):
        (tiny / "results" / f"runner.db{extra}").unlink(missing_ok=True)
    rebuilt = run_cli("sync", "--rebuild", cwd=tiny)
    assert rebuilt.returncode == 0 and "2 run(s) indexed" in rebuilt.stdout
    after = json.loads(run_cli("status", "--json", cwd=tiny).stdout)
    assert after == before


def test_a_commit_that_leaves_the_code_alone_keeps_runs_done_and_stale_ones_rerun_on_request(tiny):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tiny, check=True, capture_output=True,
                       env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})

    (tiny / ".gitignore").write_text("results/\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "study")
    assert run_cli("launch", "--workers", "1", "--where", "architecture=cnn", "--where", "seed=0", cwd=tiny).returncode == 0
    (tiny / "notes.txt").write_text("what we saw\n")
    git("add", ".")
    git("commit", "-qm", "notes")
    one = ("--where", "architecture=cnn", "--where", "seed=0")
    view = json.loads(run_cli("status", "--json", *one, cwd=tiny).stdout)
    assert view["counts"] == {"done": 1}  # the training code is the same: still done
    rid = view["runs"][0]["id"]
    # the run as another version of the code would have left it
    trained_by_other_code(tiny / "results" / "runs" / rid)
    view = json.loads(run_cli("status", "--json", *one, cwd=tiny).stdout)
    assert view["counts"] == {"stale": 1} and view["runs"][0]["reason"].startswith("trained with other code")
    assert "`--rerun stale` trains them again" in run_cli("launch", *one, cwd=tiny).stdout
    again = run_cli("launch", "--workers", "1", "--rerun", "stale", "--where", "architecture=cnn", "--where", "seed=0", cwd=tiny)
    assert "1 done" in again.stdout, again.stdout + again.stderr
    info = json.loads(run_cli("show", rid, "--json", cwd=tiny).stdout)
    assert info["state"] == "done" and len(info["attempts"]) == 2
    assert info["attempts"][0]["git_commit"] != info["attempts"][1]["git_commit"]  # provenance: both commits
    assert not info["attempts"][1]["git_dirty"]
    assert list((tiny / "results" / "runs" / rid).glob("summary.superseded-*.json"))


# ---------------------------------------------------------------- conventions of every command (in-process, fast)

SELECTING = {"plan", "launch", "status", "report", "cancel", "probe"}  # take -f, --matrix and --where
PYTHON_TYPES = re.compile(r"<(list|int|str|float|path|bool)|range>|\[default: (None|\(dynamic\))\]")


def _commands(group, words=()):
    """Every command of the CLI as the words that call it: ("plan",), ("data", "list"), ..."""
    for name, command in group.commands.items():
        yield from _commands(command, (*words, name)) if hasattr(command, "commands") else [(*words, name)]


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[tuple[str, ...], str]:
    """``runner [COMMAND] --help`` of every command and group."""
    import typer

    from runner.cli.app import app

    tmp_path, helps = tmp_path_factory.mktemp("help"), {}
    for words in [(), ("data",), *_commands(typer.main.get_command(app))]:
        out = cli(*words, "--help", cwd=tmp_path)
        assert out.returncode == 0 and not out.stderr, (words, out.stderr)
        helps[words] = out.stdout
    return helps


def test_help_names_values_never_python_types(helps):
    assert {("plan",), ("tune",), ("show",), ("data", "verify")} <= set(helps)
    for words, text in helps.items():
        assert not PYTHON_TYPES.search(text), f"runner {' '.join(words)} --help:\n{text}"
    assert "-f, --file FILE" in helps[("plan",)] and "--gpus N|I,J,..." in helps[("launch",)]
    assert "NAME  A [tune.NAME] block" in helps[("tune",)] and "RUN_ID  A run id" in helps[("show",)]


def test_every_command_that_selects_runs_takes_the_same_selection(helps):
    where = helps[("plan",)][helps[("plan",)].index("-w, --where"):].split("--json")[0]
    for words, text in helps.items():
        if not words or words == ("data",):
            continue
        assert "-f, --file FILE" in text, words
        if words[0] in SELECTING:
            assert "-m, --matrix NAME      Only runs of this [[matrix]] (repeatable)." in text, words
            assert where in text, words  # one declaration: the same words everywhere
        else:
            assert "--matrix" not in text.split("Options:")[1], words
            says_why = text if words[0] != "data" else helps[("data",)]
            assert "no --matrix or --where" in " ".join(says_why.split()).lower(), words


def test_version_and_exit_codes(tmp_path):
    from importlib.metadata import version

    out = cli("--version", cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, f"runner {version('matrix-runner')} (Python {platform.python_version()})\n")
    text = cli("--help", cwd=tmp_path).stdout
    codes = text[text.index("Exit codes:"):].splitlines()[1:]
    assert [line.split()[0] for line in codes if re.match(r"\s+\d", line)] == ["0", "1", "2", "130"]
    assert "--install-completion" in text and "--show-completion" in text
    assert cli("plan", "--no-such-option", cwd=tmp_path).returncode == 2  # a usage error is bad input too
