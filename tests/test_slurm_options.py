"""[slurm] values reach a shell script on the cluster: anything that is not what SLURM expects is
refused at plan time with one line, before any submission (no SLURM needed here)."""

from __future__ import annotations

import pytest

from conftest import TINY_STUDY, run_cli, write_study
from runner.study.slurm import SlurmOptions, minutes


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
    write_study(tmp_path, TINY_STUDY.replace("{epochs}", "1") + f"\n[slurm]\n{body}\n")
    out = run_cli("plan", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"experiments.toml: [slurm] {key}: ") and out.stderr.count("\n") == 1, out.stderr


def test_command_line_flags_override_and_are_checked_the_same_way(tmp_path):
    write_study(tmp_path, TINY_STUDY.replace("{epochs}", "1") + '\n[slurm]\npartition = "gpu"\n')
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
