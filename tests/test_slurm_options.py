"""[slurm] values reach a shell script on the cluster: anything that is not what SLURM expects is
refused at plan time with one line, before any submission; and what the SLURM backend makes of
SLURM's answers and of a run's job file (no SLURM needed here: squeue, sacct and scancel are fakes)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import cli, run_cli, write_study
from runner.backends import job_file
from runner.backends.slurm import SlurmBackend
from runner.study.slurm import SlurmOptions, minutes
from studies import study_toml


@pytest.mark.parametrize("body, key", [
    ('partition = "gpu; rm -rf ~"', "partition"),
    ('account = "$(whoami)"', "account"),
    ('qos = "normal\\n#SBATCH --uid=0"', "qos"),
    ('constraint = "a100 && `id`"', "constraint"),
    ('sbatch = ["--comment=$(id)"]', "sbatch"),
    ('sbatch = ["--array=0-99"]', "sbatch"),
    ('setup = ["module load cuda\\nrm -rf ~"]', "setup"),
    ('time = "forever"', "time"),
    ('mem = "lots"', "mem"),
    ('time = "1"\nsignal_before_s = 120', "signal_before_s"),
    ('partitions = "gpu"', "partitions"),
])
def test_plan_refuses_what_slurm_would_not_take(tmp_path, body, key):
    write_study(tmp_path, study_toml(epochs=1) + f"\n[slurm]\n{body}\n")
    out = run_cli("plan", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"experiments.toml: [slurm] {key}: ") and out.stderr.count("\n") == 1, out.stderr


# what each value that reaches a batch script or a file name is tried with: a line break (Python's
# ``$`` matches before a final one), a quote, a command substitution, a command separator, NUL
INJECTIONS = ["gpu\n", "gpu\n#SBATCH --uid=0", 'gpu"', "$(id)", "gpu;id", "gpu\u0000"]
SLURM_VALUES = {"partition": "gpu", "account": "lab", "qos": "normal", "constraint": "a100", "mem": "16G",
                "gpu_type": "a100", "time": "1:00:00", "sbatch": "--mail-type=END", "setup": "module load cuda"}


def _toml_string(text: str) -> str:
    import json

    return json.dumps(text)  # a TOML basic string: \n and \u0000 escaped as TOML reads them


@pytest.mark.parametrize("key", sorted(SLURM_VALUES) + ["study name"])
@pytest.mark.parametrize("bad", INJECTIONS, ids=["newline", "newline-directive", "quote", "substitution",
                                                 "separator", "nul"])
def test_no_value_smuggles_shell_text_into_a_batch_script(tmp_path, key, bad):
    good = SLURM_VALUES.get(key, "tiny")
    value = good + bad[3:] if bad.startswith("gpu") else bad  # the good value with the attack after it
    if key == "setup" and "\n" not in value and "\u0000" not in value:
        pytest.skip("setup lines are shell commands by design: only a line break or NUL is refused")
    literal = _toml_string(value)
    literal = f"[{literal}]" if key in ("sbatch", "setup") else literal
    if key == "study name":
        text = study_toml(epochs=1).replace('name = "tiny"', f"name = {literal}", 1)
        where = "experiments.toml: [study] name: "
    else:
        text = study_toml(epochs=1) + f"\n[slurm]\n{key} = {literal}\n"
        where = f"experiments.toml: [slurm] {key}: "
    write_study(tmp_path, text)
    out = cli("plan", cwd=tmp_path)  # in this process: the same entry point, 60 cases in a second
    assert out.returncode == 2 and out.stdout == "", (value, out.stdout, out.stderr)
    assert out.stderr.startswith(where) and out.stderr.count("\n") == 1, (value, out.stderr)


def test_command_line_flags_override_and_are_checked_the_same_way(tmp_path):
    write_study(tmp_path, study_toml(epochs=1) + '\n[slurm]\npartition = "gpu"\n')
    out = run_cli("launch", "--backend", "slurm", "--partition", "gpu;reboot", cwd=tmp_path)
    assert out.returncode == 2 and "partition: 'gpu;reboot': not a SLURM name" in out.stderr
    out = run_cli("launch", "--partition", "gpu", cwd=tmp_path)
    assert out.returncode == 2 and "--partition: only with --backend slurm" in out.stderr


def test_options_become_submitit_parameters():
    o = SlurmOptions(partition="gpu", account="lab", qos="high", time="2-00:00:00", gpus_per_task=2, gpu_type="a100",
                     cpus_per_task=8, mem="64G", array_parallelism=4, constraint="a100&ib", per_task=3,
                     sbatch=["--mail-type=END", "--exclusive"], setup=["module load cuda/12"])
    p = o.executor_parameters("runner-study")
    assert p["timeout_min"] == 2880 and p["slurm_gres"] == "gpu:a100:2" and p["slurm_partition"] == "gpu"
    assert p["slurm_additional_parameters"] == {"requeue": True, "mail_type": "END", "exclusive": True,
                                                "qos": "high", "account": "lab"}
    assert p["slurm_array_parallelism"] == 4 and p["slurm_setup"] == ["module load cuda/12"]
    assert [minutes(t) for t in ("90", "1:30", "1:30:00", "2-3", "0-0:0:1")] == [90, 2, 90, 3060, 1]


def fake_slurm(tmp_path: Path, monkeypatch, **stdout: str) -> Path:
    """squeue, sacct and scancel that print ``stdout[name]`` and append their arguments to NAME.args."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sacct", "scancel"):
        (bin_dir / f"{name}.out").write_text(stdout.get(name, ""))
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "$*" >> "{bin_dir}/{name}.args"\ncat "{bin_dir}/{name}.out"\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def calls(bin_dir: Path, name: str) -> list[str]:
    p = bin_dir / f"{name}.args"
    return p.read_text().splitlines() if p.exists() else []


def test_poll_asks_squeue_then_sacct_once_each_for_all_tasks(tmp_path, monkeypatch):
    bin_dir = fake_slurm(tmp_path, monkeypatch, squeue="12_0|RUNNING\n12_1|PENDING\n99_0|RUNNING\n",
                         sacct="12_2|CANCELLED by 0\n13_[0-1,3%2]|PENDING\n")
    backend = SlurmBackend(SimpleNamespace(runs_dir=tmp_path, dir=tmp_path))
    asked = {"12_0", "12_1", "12_2", "13_0", "13_1", "13_3", "14_0"}
    assert backend.poll(asked) == {"12_0": "RUNNING", "12_1": "PENDING", "12_2": "CANCELLED", "13_0": "PENDING",
                                   "13_1": "PENDING", "13_3": "PENDING"}  # 14_0: no record, left out
    assert calls(bin_dir, "squeue") == ["-h -r -o %i|%T -j 12,13,14"]
    assert calls(bin_dir, "sacct") == ["-n -P -X -o JobID,State -j 12_2,13_0,13_1,13_3,14_0"]
    assert "CANCELLED" in backend.final and "PENDING" in backend.waiting and "RUNNING" in backend.running
    assert backend.poll(set()) == {} and calls(bin_dir, "squeue") == ["-h -r -o %i|%T -j 12,13,14"]
    backend.cancel(["12_0", "12_1"])
    assert calls(bin_dir, "scancel") == ["12_0 12_1"]


def test_a_silent_slurm_leaves_every_task_without_a_state(tmp_path, monkeypatch):
    bin_dir = fake_slurm(tmp_path, monkeypatch)
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 1\n")
    assert SlurmBackend(SimpleNamespace(runs_dir=tmp_path, dir=tmp_path)).poll({"12_0"}) == {}


def test_the_job_file_says_which_task_owns_a_run(tmp_path):
    run_dir = tmp_path / "abc"
    run_dir.mkdir()
    assert job_file.task_of(run_dir) is None and job_file.owned_by(run_dir, {"7_0"}, 1.0)  # never submitted
    job_file.claim(run_dir, submitted_at=2.0)
    assert job_file.task_of(run_dir) is None and job_file.job_log(run_dir) is None
    assert job_file.owned_by(run_dir, {"7_0"}, 2.0) and not job_file.owned_by(run_dir, {"7_0"}, 1.0)
    job_file.record(run_dir, "8_3", 2.0, tmp_path / ".slurm" / "8")
    assert job_file.task_of(run_dir) == "8_3"
    assert SlurmBackend(SimpleNamespace(runs_dir=tmp_path, dir=tmp_path)).handle_of("abc") == "8_3"
    assert job_file.owned_by(run_dir, {"8", "8_3"}, 0.0) and not job_file.owned_by(run_dir, {"7", "7_0"}, 2.0)
    assert job_file.job_log(run_dir) == str(tmp_path / ".slurm" / "8" / "8_3_0_log.out")
