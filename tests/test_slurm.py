"""`runner launch --backend slurm` against a real SLURM (CI starts one with
../shared/slurm/setup_local_slurm.sh start): array jobs, scancel, time limits with requeue,
failing cells, and SLURM's view in `runner status`.

On the local test cluster a requeued job waits 120 s before it may start again (SLURM's
fixed delay); the time-limit test lets it start 10 s after the requeue instead, with a longer
limit (`scontrol update StartTime=now+10 TimeLimit=10`), as an impatient administrator would. Everything else is as on a real cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, staged_study, write_study
from studies import study_toml


def _slurm_missing() -> str | None:
    if shutil.which("sbatch") is None:
        return "SLURM is not installed here; CI starts one with ../shared/slurm/setup_local_slurm.sh start"
    if subprocess.run(["squeue", "-h"], capture_output=True).returncode != 0:
        return "SLURM's commands are here but slurmctld does not answer; start it with setup_local_slurm.sh start"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_slurm_missing() is not None, reason=_slurm_missing() or "")]
ONE_RUN = ("--where", "architecture=cnn", "--where", "seed=0")
SUBMIT = ("launch", "--backend", "slurm", "--cpus-per-task", "1")


@pytest.fixture(autouse=True)
def cancel_leftover_jobs(tmp_path):
    """Whatever a test submitted does not outlive it, even when it fails."""
    yield
    tasks = {json.loads(p.read_text()).get("job_id") for p in tmp_path.rglob("slurm.json")}
    if tasks - {None}:
        subprocess.run(["scancel", *sorted(tasks - {None})], capture_output=True)


def status(d: Path, *args: str) -> dict:
    return json.loads(run_cli("status", "--json", *args, cwd=d).stdout)


def wait_for(predicate, what: str, timeout: float = 300, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def attempts(d: Path, run_id: str) -> list[dict]:
    return json.loads(run_cli("show", run_id, "--json", cwd=d).stdout)["attempts"]


def submit(d: Path, *args: str) -> subprocess.CompletedProcess:
    out = run_cli(*SUBMIT, *args, cwd=d)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted" in out.stdout, out.stdout
    return out


def test_an_array_job_finishes_the_demo_matrix(tmp_path):
    # the demo's own 30 epochs are test_demo's; 4 epochs keep the SLURM path's test to a minute
    text = (ROOT / "experiments.toml").read_text()
    (tmp_path / "experiments.toml").write_text(text + '\n[[override]]\nmatch = { matrix = "demo" }\nset = { epochs = 4 }\n')
    out = submit(tmp_path, "--matrix", "demo", "--per-task", "3", "--time", "20")
    assert "submitted 6 run(s) as 2 array task(s)" in out.stdout
    again = run_cli(*SUBMIT, "--matrix", "demo", cwd=tmp_path)  # while the tasks wait or run
    assert "nothing to submit" in again.stdout and "6 left to their earlier SLURM task(s)" in again.stdout
    view = wait_for(lambda: (v := status(tmp_path, "--matrix", "demo"))["counts"] == {"done": 6} and v,
                    "the demo matrix to finish")
    for run in view["runs"]:
        (attempt,) = attempts(tmp_path, run["id"])
        assert attempt["slurm_job_id"] and attempt["slurm_array_task_id"] in ("0", "1")
        assert "runner launch --backend slurm" in attempt["command"]
    report = run_cli("report", "--table", "demo_accuracy", cwd=tmp_path).stdout
    assert "| vit_tiny |" in report and "| resnet18_narrow |" in report
    assert "nothing to submit: 6 of 6" in run_cli(*SUBMIT, "--matrix", "demo", cwd=tmp_path).stdout


def test_scancel_mid_run_then_a_relaunch_resumes_it(tmp_path):
    write_study(tmp_path, epochs=100)  # ~30 s of training: scancel lands long before the end
    submit(tmp_path, *ONE_RUN)
    run_dir = wait_for(lambda: next((p.parent for p in (tmp_path / "results" / "runs").glob("*/checkpoint.pt")), None),
                       "a checkpoint", every=0.2)
    job = json.loads((run_dir / "slurm.json").read_text())["job_id"]
    assert status(tmp_path, *ONE_RUN)["runs"][0]["job"]["id"] == job
    subprocess.run(["scancel", job], check=True)
    view = wait_for(lambda: (v := status(tmp_path, *ONE_RUN))["runs"][0]["state"] == "cancelled" and v,
                    "the run to show as cancelled")
    assert f"SLURM task {job} ended CANCELLED (log: " in view["runs"][0]["reason"]
    assert (run_dir / "checkpoint.pt").exists()

    submit(tmp_path, *ONE_RUN)
    wait_for(lambda: status(tmp_path, *ONE_RUN)["counts"] == {"done": 1}, "the resubmitted run to finish")
    first, second = attempts(tmp_path, run_dir.name)
    assert first["status"] == "interrupted" and second["status"] == "done"
    assert second["provenance"]["engine"]["resumed_from"]["epoch"] >= 1


def test_a_task_at_its_time_limit_checkpoints_requeues_and_resumes(tmp_path):
    # ~150 s of training here (2.7 epochs/s); SLURM signals the task within ~70 s of its start,
    # so the run is still training when the signal comes, even on a machine twice as fast
    write_study(tmp_path, epochs=400)
    (tmp_path / "experiments.toml").write_text((tmp_path / "experiments.toml").read_text()
                                               + '\n[slurm]\ntime = "10"\nsignal_before_s = 30\n')
    submit(tmp_path, *ONE_RUN)
    run_dir = next((tmp_path / "results" / "runs").glob("[!.]*"))
    job = json.loads((run_dir / "slurm.json").read_text())["job_id"]
    # SLURM looks at time limits every ~30 s, so a one-minute limit set at submission may signal the
    # task before its run even starts; cut the limit to one minute once the run has a checkpoint
    wait_for(lambda: (run_dir / "checkpoint.pt").exists(), "a checkpoint", every=0.2)
    subprocess.run(["scontrol", "update", f"jobid={job}", "TimeLimit=1"], check=True, capture_output=True)

    def requeued_and_back() -> bool:
        nudge(job)
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
        return any(a.get("status") == "interrupted" for a in _events(run_dir)) and "RUNNING" in state

    def finished() -> bool:
        nudge(job)  # the remaining epochs may take more than one more requeue
        return status(tmp_path, *ONE_RUN)["counts"] == {"done": 1}

    wait_for(requeued_and_back, "the signal, a checkpoint, the requeue and the restart", timeout=240)
    wait_for(finished, "the requeued task to finish", timeout=300)
    tries = attempts(tmp_path, run_dir.name)
    assert tries[0]["status"] == "interrupted" and tries[-1]["status"] == "done"
    assert tries[-1]["provenance"]["engine"]["resumed_from"]["epoch"] >= 1
    history = subprocess.run(["sacct", "-n", "-P", "-X", "--duplicates", "-o", "JobID,State", "-j", job],
                             capture_output=True, text=True).stdout
    assert "REQUEUED" in history, history


def nudge(job: str) -> None:
    """A requeued job waits out SLURM's BeginTime delay (120 s); let it start in 10 s instead (not at
    once: until the previous instance is cleaned up, its credential is revoked and a start fails),
    with 10 minutes to finish: SLURM checks time limits every 30 s or so, so a one-minute task
    requeued would be signalled again seconds after each start and barely move on."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r|%S"], capture_output=True, text=True).stdout.strip()
    reason, _, start = out.partition("|")
    try:
        wait = time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S")) - time.time()
    except ValueError:
        return
    if reason == "BeginTime" and wait > 20:
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now+10", "TimeLimit=10"], capture_output=True)


def _events(run_dir: Path) -> list[dict]:
    p = run_dir / "attempts.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_a_failing_cell_is_failed_with_its_reason_while_the_others_finish(tmp_path):
    write_study(tmp_path, study_toml(epochs=2).replace(
        'model = "resnet18_cifar"\nwidth = 4', 'model = "timm:resnet18"\ndrop_rate = 1.5'))  # fails in training
    submit(tmp_path, "--per-task", "2")
    view = wait_for(lambda: (v := status(tmp_path))["counts"] == {"done": 2, "failed": 2} and v,
                    "two runs done and two failed")
    failed = [r for r in view["runs"] if r["state"] == "failed"]
    assert all("dropout probability" in r["reason"] for r in failed)
    assert "Traceback" in attempts(tmp_path, failed[0]["id"])[0]["traceback"]


def test_runner_cancel_stops_queued_runs_and_cancels_their_tasks(tmp_path):
    write_study(tmp_path, epochs=300)
    submit(tmp_path, "--array-parallelism", "1")  # one task at a time: three wait
    wait_for(lambda: status(tmp_path)["counts"].get("running") == 1, "one run to start")
    out = run_cli("cancel", "--where", "seed=1", cwd=tmp_path)
    assert out.returncode == 0 and "scancel" in out.stdout, out.stdout + out.stderr
    view = wait_for(lambda: (v := status(tmp_path, "--where", "seed=1"))["counts"] == {"cancelled": 2} and v,
                    "the two seed-1 runs to be cancelled")
    assert all(r["attempts"] == 0 for r in view["runs"])  # they never started
    # SLURM keeps no record of array tasks cancelled while pending: squeue and sacct both forget them
    assert all(r["job"]["state"] in (None, "CANCELLED") for r in view["runs"])


def test_the_batch_script_carries_the_study_options(tmp_path):
    write_study(tmp_path, study_toml(epochs=1) + """
[slurm]
time = "0:10:00"
sbatch = ["--comment=matrix-runner-test"]
setup = ["export RUNNER_SETUP_RAN=yes"]
""")
    submit(tmp_path, "--where", "architecture=vit", "--where", "seed=0", "--mem", "2G")
    (script,) = (tmp_path / "results" / "runs" / ".slurm").glob("*/*_submission.sh")
    text = script.read_text()
    for line in ("#SBATCH --comment=matrix-runner-test", "#SBATCH --requeue", "#SBATCH --signal=USR2@120",
                 "#SBATCH --time=10", "#SBATCH --mem=2G", "#SBATCH --cpus-per-task=1", "export RUNNER_SETUP_RAN=yes"):
        assert line in text, text
    wait_for(lambda: status(tmp_path, "--where", "architecture=vit", "--where", "seed=0")["counts"] == {"done": 1},
             "the run to finish")


def test_arrays_are_split_to_respect_max_array_size(tmp_path, monkeypatch):
    """A cluster with MaxArraySize = 3 (this one allows 1001): four tasks go out as two arrays."""
    from runner import commands
    from runner.backends import slurm
    from runner.launch.scheduler import submit_to_slurm
    from runner.study.slurm import SlurmOptions

    write_study(tmp_path, epochs=1)
    monkeypatch.setattr(slurm, "max_array_size", lambda: 3)
    sel = commands.load(tmp_path / "experiments.toml")
    result = submit_to_slurm(sel.study, sel.runs, commands.open_store(sel.study, create=True),
                             SlurmOptions(cpus_per_task=1, time="10"))
    arrays = sorted({j.split("_")[0] for j in result.job_ids}, key=int)
    assert result.submitted == 4 and len(arrays) == 2
    assert sorted(j for j in result.job_ids if j.startswith(arrays[0] + "_")) == [f"{arrays[0]}_{i}" for i in range(3)]
    wait_for(lambda: status(tmp_path)["counts"] == {"done": 4}, "both arrays to finish")


def test_runner_tune_on_slurm_and_a_killed_tuner_watches_its_jobs_again_without_resubmitting(tmp_path):
    """Each trial run is its own SLURM job (array_parallelism at once); the tuner polls the folders,
    the tasks' workers stop on prune.json. Killed while its jobs run, the next tuner takes them up."""
    import optuna

    from test_tune import STUDY

    write_study(tmp_path, STUDY.replace("trials = 6", "trials = 3")
                .replace("[[matrix]]", "[slurm]\ncpus_per_task = 1\narray_parallelism = 2\n\n[[matrix]]", 1))
    refused = run_cli("tune", "vit_lr", "--backend", "slurm", "--workers", "2", cwd=tmp_path)
    assert refused.returncode == 2 and "only for the local backend" in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "runner", "tune", "vit_lr", "--backend", "slurm"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "results" / "runs"

    def both_submitted_one_training():
        jobs = {p.parent.name: json.loads(p.read_text()).get("job_id") for p in runs.glob("*/slurm.json")}
        return jobs if len(jobs) == 2 and all(jobs.values()) and list(runs.glob("*/heartbeat.json")) else None

    try:
        jobs = wait_for(both_submitted_one_training, "two trials submitted and one training", every=0.3)
    finally:
        proc.kill()
        proc.wait()
    out = run_cli("tune", "vit_lr", "--backend", "slurm", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="tiny/vit_lr", storage=f"sqlite:///{tmp_path / 'results' / 'runner.db'}")
    S = optuna.trial.TrialState
    trials = study.get_trials()
    assert len(trials) == 3 and S.COMPLETE in [t.state for t in trials], [t.state for t in trials]
    assert all(t.state in (S.COMPLETE, S.PRUNED) for t in trials)
    for t in trials:
        (run_id,) = t.user_attrs["runs"]
        (attempt,) = attempts(tmp_path, run_id)  # trained once, inside a SLURM task
        assert attempt["slurm_job_id"] and attempt["status"] == ("done" if t.state == S.COMPLETE else "pruned")
        if run_id in jobs:  # submitted before the kill: watched again, not submitted twice
            assert json.loads((runs / run_id / "slurm.json").read_text())["job_id"] == jobs[run_id]


def test_a_staged_study_submits_one_array_per_stage_and_the_second_waits_for_the_first(tmp_path):
    """The fine-tuning run is also a 2-process (gloo) run: its task asks for 2 CPUs on one node."""
    write_study(tmp_path, staged_study(epochs=1, finetune={"init": "run:pretrain", "freeze": "backbone", "gpus_per_run": 2}))
    out = submit(tmp_path, "--matrix", "finetune")
    assert "submitted 2 run(s) as 2 array task(s)" in out.stdout, out.stdout
    jobs = {json.loads((p.parent / "run.json").read_text())["label"]: json.loads(p.read_text())["job_id"]
            for p in tmp_path.glob("results/runs/*/slurm.json")}
    first, second = jobs["cnn/low/s0"], jobs["cnn/high/s0"]
    job = subprocess.run(["scontrol", "show", "job", second.split("_")[0]], capture_output=True, text=True).stdout
    assert f"Dependency=afterany:{first.split('_')[0]}" in job and "NumCPUs=2" in job, job
    view = wait_for(lambda: (v := status(tmp_path))["counts"] == {"done": 2} and v, "both stages to finish")
    runs = {r["label"]: r for r in view["runs"]}
    up, down = runs["cnn/low/s0"], runs["cnn/high/s0"]
    up_end = attempts(tmp_path, up["id"])[-1]["ended_at"]
    down_attempts = attempts(tmp_path, down["id"])
    assert down_attempts[0]["started_at"] >= up_end and down["upstream"] == up["id"]
    assert down_attempts[-1]["provenance"]["engine"]["world_size"] == 2
