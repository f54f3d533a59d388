"""``runner tune NAME --backend slurm``: the tuner's trials as SLURM jobs.

The tuner (``runner/tune/tuner.py``) stays the feed, and what tuning on any backend shares is
``tuner.tuning``; this is the loop that a local launch's dispatcher is for workers: keep up to
K trial runs in SLURM (K = ``[slurm] array_parallelism``, 4 when unset), each submitted through
the SLURM backend (``runner/backends/slurm.py``, as ``runner launch --backend slurm`` submits)
as its own one-task array the moment a trial is asked, and poll the run folders every few
seconds. Workers in the tasks write their metrics and heartbeats there and stop on
``prune.json`` as local ones do (the folders are on the shared filesystem). The tuner process
must live as long as the study: killed or stopped with Ctrl-C, it leaves its tasks running,
and the next ``runner tune`` watches them again rather than submitting them twice.
"""

from __future__ import annotations

import time

from runner.backends.slurm import SlurmBackend, require_slurm
from runner.plan.runs import Plan, Run
from runner.records.store import Store
from runner.states import SETTLED, State
from runner.study.spec import Study
from runner.study.tune import Tune
from runner.tune.tuner import TuneResult, Tuner, tuning

POLL_S = 3.0
DEFAULT_IN_FLIGHT = 4


def tune_on_slurm(study: Study, plan: Plan, tune: Tune, store: Store, options, display, *,
                  trials: int | None = None) -> TuneResult:
    require_slurm()
    backend = SlurmBackend(study, options)
    limit = options.array_parallelism or DEFAULT_IN_FLIGHT
    with tuning(study, plan, tune, store, display, trials) as (tuner, lock):
        flying: dict[str, Run] = {}

        def submit(runs: list[Run]) -> None:
            tasks = backend.submit([[r.id] for r in runs], job_name=f"runner-tune-{tune.name}")
            store.ingest(study.runs_dir, [r.id for r in runs])
            for run, task in zip(runs, tasks):
                flying[run.id] = run
                display.message(f"submitted {run.label} ({run.id}) as SLURM task {task}")

        adopted = tuner.adopt(orphans_exit=False)
        tasks = {r.id: t for r in adopted if (t := backend.handle_of(r.id))}
        alive = backend.poll(set(tasks.values()))
        still = [r for r in adopted if alive.get(tasks.get(r.id, "")) not in (None, *backend.final)]
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
                _settle_finished(backend, tuner, flying)
        except KeyboardInterrupt:
            tuner.result.interrupted = True
            display.message(f"stopped watching: {len(flying)} trial run(s) go on in SLURM; "
                            f"`runner tune {tune.name} --backend slurm` watches them again")
    return tuner.result


def _settle_finished(backend: SlurmBackend, tuner: Tuner, flying: dict[str, Run]) -> None:
    """Hand the tuner every run whose folder says it ended; a run whose task SLURM reports ended
    while the folder does not (the job failed before the worker could write) is marked failed,
    with SLURM's word and the task's log."""
    tasks = {rid: backend.handle_of(rid) for rid in flying}
    answers = backend.poll({t for t in tasks.values() if t})
    for rid, run in list(flying.items()):
        folder = tuner.folder(run)
        fs = folder.read()
        if fs.state not in SETTLED and answers.get(tasks[rid] or "") in backend.final and fs.state != State.RUNNING:
            reason = (f"SLURM task {tasks[rid]} ended {answers[tasks[rid]]} before the run finished "
                      f"(log: {backend.log_of(rid)})")
            attempt = fs.attempts[-1]["attempt"] if fs.attempts else 0
            folder.fail(attempt, reason, "")
            fs = folder.read()
        if fs.state in SETTLED:
            del flying[rid]
            tuner.display.finished(run, fs.state, tuner.store.runs([rid]).get(rid), fs.reason)
            tuner.settled(run, fs.state, fs.reason)
