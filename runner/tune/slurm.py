"""``runner tune NAME --backend slurm``: the tuner's trials as SLURM jobs.

The tuner (``runner/tune/tuner.py``) stays the feed; this is the loop that a local launch's
dispatcher is for workers: keep up to K trial runs in SLURM (K = ``[slurm]
array_parallelism``, 4 when unset), each submitted as its own one-task array the moment a
trial is asked, and poll the run folders every few seconds. Workers in the tasks write
their metrics and heartbeats there and stop on ``prune.json`` as local ones do (the folders
are on the shared filesystem). The tuner process must live as long as the study: killed or
stopped with Ctrl-C, it leaves its tasks running, and the next ``runner tune`` watches them
again rather than submitting them twice.
"""

from __future__ import annotations

import time

from runner.backends import slurm
from runner.launch.lock import launch_lock
from runner.plan.expand import Plan, Run
from runner.records.runfolder import RunFolder
from runner.study.spec import Study
from runner.records.store import Store
from runner.tune.tuner import SETTLED, Tune, TuneResult, Tuner, check_space, tuned_cells
from runner.tune.study import open_study

POLL_S = 3.0
DEFAULT_IN_FLIGHT = 4


def tune_on_slurm(study: Study, plan: Plan, tune: Tune, store: Store, options, display, *,
                  trials: int | None = None) -> TuneResult:
    from runner.launch.scheduler import refuse_missing_data

    slurm.require_slurm()
    cells = tuned_cells(study, plan, tune)
    check_space(study, tune, cells)
    limit = options.array_parallelism or DEFAULT_IN_FLIGHT
    device = "cuda" if options.gpus_per_task else "cpu"
    parameters = options.executor_parameters(f"runner-tune-{tune.name}")
    with launch_lock(study.runs_dir) as lock:
        refuse_missing_data(cells, cells)
        tuner = Tuner(study, tune, cells, open_study(study, tune, cells, create=True), store, display,
                      trials or tune.trials)
        flying: dict[str, Run] = {}

        def submit(runs: list[Run]) -> None:
            slurm.submit(study.runs_dir, study.dir, [[r.id] for r in runs], parameters, device)
            store.ingest(study.runs_dir, [r.id for r in runs])
            for run in runs:
                flying[run.id] = run
                display.message(f"submitted {run.label} ({run.id}) as SLURM task "
                                f"{slurm.task_of(study.runs_dir / run.id)}")

        adopted = tuner.adopt(orphans_exit=False)
        alive = slurm.states({t for r in adopted if (t := slurm.task_of(study.runs_dir / r.id))})
        still = [r for r in adopted if alive.get(slurm.task_of(study.runs_dir / r.id) or "") not in (None, *slurm.FINAL)]
        flying.update({r.id: r for r in still})
        if len(still) < len(adopted):
            submit([r for r in adopted if r not in still])
        try:
            while True:
                while len(flying) < limit and (runs := tuner.more()):
                    submit(runs)
                lock.announce(sorted(flying))
                if not flying:
                    break
                time.sleep(POLL_S)
                store.ingest(study.runs_dir, list(flying))
                tuner.watch(list(flying))
                _settle_finished(study, tuner, flying)
        except KeyboardInterrupt:
            tuner.result.interrupted = True
            display.message(f"stopped watching: {len(flying)} trial run(s) go on in SLURM; "
                            f"`runner tune {tune.name} --backend slurm` watches them again")
        tuner.result.best = tuner.best()
        store.ingest(study.runs_dir)
    return tuner.result


def _settle_finished(study: Study, tuner: Tuner, flying: dict[str, Run]) -> None:
    """Hand the tuner every run whose folder says it ended; a run whose task SLURM reports ended
    while the folder does not (the job failed before the worker could write) is marked failed,
    with SLURM's word and the task's log."""
    tasks = {rid: slurm.task_of(study.runs_dir / rid) for rid in flying}
    answers = slurm.states({t for t in tasks.values() if t})
    for rid, run in list(flying.items()):
        folder = RunFolder(study.runs_dir / rid)
        fs = folder.read()
        if fs.state not in SETTLED and answers.get(tasks[rid] or "") in slurm.FINAL and fs.state != "running":
            reason = (f"SLURM task {tasks[rid]} ended {answers[tasks[rid]]} before the run finished "
                      f"(log: {slurm.job_log(folder.path)})")
            attempt = fs.attempts[-1]["attempt"] if fs.attempts else 0
            folder.fail(attempt, reason, "")
            fs = folder.read()
        if fs.state in SETTLED:
            del flying[rid]
            tuner.display.finished(run, fs.state, tuner.store.runs([rid]).get(rid), fs.reason)
            tuner.settled(run, fs.state, fs.reason)
