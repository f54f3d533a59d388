"""Shell completion of the study's names (runner/cli/completion.py): the callbacks themselves, then
Typer's completion mechanism in-process and once as a shell calls it (``_RUNNER_COMPLETE``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from conftest import write_study
from runner.cli import completion as c
from runner.cli.app import app
from studies import study_toml

EXTRA = """
[[matrix]]
name = "wide"
architectures = ["vit"]
datasets = ["digits"]
seeds = [7]

[[figure]]
name = "my_curves"
kind = "curves"
metric = "val_acc"

[[probe]]
name = "speed"
kind = "inference_time"

[tune.vit_lr]
match = { architecture = "vit" }
metric = "val_acc"
direction = "maximize"
trials = 2
space = { lr = { low = 1e-4, high = 1e-2, log = true } }
"""


@pytest.fixture
def study(tmp_path):
    return write_study(tmp_path, study_toml(epochs=1, extra=EXTRA))


def ctx(file) -> SimpleNamespace:
    """What a completion callback reads of Typer's context: the parsed ``-f`` (or its default)."""
    return SimpleNamespace(params={"file": file})


def test_names_come_from_the_study_file(study):
    assert c.complete_matrix(ctx(study), "") == ["main", "wide"]
    assert c.complete_matrix(ctx(study), "w") == ["wide"]
    assert c.complete_table(ctx(study), "") == ["accuracy", "tune_vit_lr", "probe_speed"]
    assert c.complete_figure(ctx(study), "") == ["learning_curves", "accuracy_vs_params", "accuracy_vs_throughput",
                                                 "my_curves"]
    assert c.complete_probe(ctx(study), "s") == ["speed"]
    assert c.complete_tune(ctx(study), "") == ["vit_lr"]
    assert c.complete_dataset(ctx(study), "") == ["digits"]


def test_where_completes_keys_then_axis_values(study):
    keys = c.complete_where(ctx(study), "")
    assert keys[:4] == ["architecture=", "dataset=", "seed=", "matrix="]
    assert {"architecture.depth=", "architecture.width=", "epochs=", "lr="} <= set(keys)
    assert c.complete_where(ctx(study), "arch") == ["architecture=", "architecture.depth=", "architecture.dim=",
                                                    "architecture.heads=", "architecture.mlp_dim=",
                                                    "architecture.model=", "architecture.patch_size=",
                                                    "architecture.width="]
    assert c.complete_where(ctx(study), "architecture=") == ["architecture=vit", "architecture=cnn"]
    assert c.complete_where(ctx(study), "architecture=vit,c") == ["architecture=vit,cnn"]
    assert c.complete_where(ctx(study), "seed=") == ["seed=0", "seed=1", "seed=7"]
    assert c.complete_where(ctx(study), "matrix=m") == ["matrix=main"]
    assert c.complete_where(ctx(study), "epochs=") == []  # values only for the axes


@pytest.mark.parametrize("text", [None, "[study\nname = ", 'matrix = "main"\ntable = 3\ntune = []\n[datasets]\nx = 1\n',
                                  "\xff\xfe not utf-8"], ids=["missing", "broken", "wrong shapes", "binary"])
def test_an_unreadable_study_completes_only_what_every_study_has(tmp_path, text, capsys):
    f = tmp_path / "experiments.toml"
    if text is not None:
        f.write_bytes(text.encode("latin-1"))
    for complete in (c.complete_matrix, c.complete_table, c.complete_probe, c.complete_tune, c.complete_dataset):
        assert complete(ctx(f), "") == [], complete
    assert c.complete_where(ctx(f), "") == ["architecture=", "dataset=", "seed=", "matrix="]
    assert c.complete_where(ctx(f), "seed=") == []
    assert c.complete_figure(ctx(f), "") == ["learning_curves", "accuracy_vs_params", "accuracy_vs_throughput"]
    assert capsys.readouterr() == ("", "")


def complete(args: str, cwd, **env: str) -> list[str]:
    """Typer's bash completion, in-process: what the shell gets for ``runner ARGS<Tab>``."""
    words = ["runner", *args.split()] + ([""] if args.endswith(" ") or not args else [])
    with pytest.MonkeyPatch.context() as m:
        m.chdir(cwd)
        result = CliRunner().invoke(app, [], prog_name="runner", env={
            "_RUNNER_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(words), "COMP_CWORD": str(len(words) - 1),
            **env})
    assert result.exit_code == 0, result.output
    return [line for line in result.output.splitlines() if line]  # nothing to offer prints an empty line


def test_typer_completes_options_with_the_file_of_the_command_line(study, tmp_path):
    assert complete("plan --matrix ", study.parent) == ["main", "wide"]
    assert complete("report -t tu", study.parent) == ["tune_vit_lr"]
    assert complete("tune ", study.parent) == ["vit_lr"]
    assert complete("probe ", study.parent) == ["speed"]
    assert complete("launch --backend ", study.parent) == ["local", "slurm"]
    assert complete("launch --rerun ", study.parent) == ["corrupt", "failed", "stale"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert complete("status --matrix ", elsewhere) == []  # no experiments.toml here: nothing, no error
    assert complete(f"status -f {study} --where matrix=", elsewhere) == ["matrix=main", "matrix=wide"]


TAB = """source <(runner --show-completion bash)
COMP_WORDS=(runner report --figure my); COMP_CWORD=3; _runner_completion runner; printf '<%s>\\n' "${COMPREPLY[@]}"
COMP_WORDS=(runner launch -m ""); COMP_CWORD=3; _runner_completion runner; printf '<%s>\\n' "${COMPREPLY[@]}"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_through_the_script_runner_prints(study):
    """The real mechanism: bash sources `runner --show-completion bash` and, on Tab, calls its function,
    which runs the installed `runner` with _RUNNER_COMPLETE; nothing but the names comes back."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}  # Typer's switch: --show-completion takes a shell
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", TAB], cwd=study.parent, env=env,
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert out.stdout.splitlines() == ["<my_curves>", "<main>", "<wide>"]
