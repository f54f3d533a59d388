"""``runner launch``: run every selected run that is not done yet, and nothing twice.

The launcher holds the study's lock (a second launcher refuses, naming the first;
``runner/launch/lock.py``), decides what is left to do from the store, writes each run's
folder (``run.json``), and hands the runs to the dispatcher (``runner/launch/dispatch.py``),
which keeps every slot busy, retries runs whose worker died and stops cleanly on
Ctrl-C. Killed with ``kill -9``, the launcher loses nothing either: its workers see
their stdin close, mark their run interrupted and exit; the next launch resumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from runner.backends.job_file import JOB_FILE
from runner.backends.local import Slot
from runner.errors import BackendError, DataError, StoreError
from runner.launch.lock import launch_lock
from runner.launch.data_check import missing_data
from runner.plan.diff import effective_states
from runner.plan.runs import Run
from runner.plan.stages import depths
from runner.records import fingerprint
from runner.records.provenance import git_commit
from runner.records.runfolder import RunFolder, lost_after_s, no_space
from runner.study.spec import Study
from runner.records.store import RunRecord, Store
from runner.states import INCOMPLETE, State


@dataclass
class LaunchResult:
    selected: int = 0
    already_done: int = 0
    stale: int = 0  # done with other training code, left alone (no --rerun stale)
    corrupt: int = 0  # a results file cannot be parsed, left alone (no --rerun corrupt)
    done: int = 0
    failed: int = 0
    lost: int = 0  # the worker died or hung more often than --retries allows
    cancelled: int = 0  # by `runner cancel`, or interrupted by a signal
    pruned: int = 0  # tuning trials stopped early by the pruner
    blocked: int = 0  # not started: their upstream was not done
    retried: int = 0
    interrupted: bool = False
    stopped_for: str | None = None  # why the launch stopped starting runs (the disk is full)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (label, state, reason)


class Display(Protocol):
    def started(self, run: Run, slot: Slot) -> None: ...
    def finished(self, run: Run, state: str, record: RunRecord | None, reason: str | None) -> None: ...
    def progress(self, records: dict[str, RunRecord]) -> None: ...
    def message(self, text: str) -> None: ...


def run_json(run: Run, study: Study) -> dict:
    """What run.json holds: enough to rebuild the index without the study file."""
    return {"id": run.id, "cell": run.cell, "label": run.label, "matrices": list(run.matrices),
            "study": study.name, "architecture": run.architecture, "dataset": run.dataset, "seed": run.seed,
            "config": run.config, **({"upstream": run.upstream} if run.upstream else {}),
            **({"wandb": study.wandb} if study.wandb else {})}


def runs_to_do(runs: list[Run], records: dict[str, RunRecord], commit: str | None, rerun: set[str],
               code: str | None = None) -> tuple[list[Run], dict[str, str]]:
    """Incomplete runs, plus failed/stale ones when asked; never done or running ones; and every
    run's state. A run is stale also when its upstream is (``runner/plan/stages.py``); ``runs``
    holds the upstreams it needs."""
    states, _ = effective_states(runs, records, commit, {r.id: r for r in runs}, code)
    return [r for r in runs if (s := states[r.id]) in INCOMPLETE or s in rerun], states


def orphaned_here(study: Study, runs: list[Run], states: dict[str, str]) -> list[Run]:
    """Runs that look running because a worker of a launcher killed a moment ago still lives (its
    own session survives the launcher's process group for the seconds it takes to notice). This
    launcher holds the study's lock, so no live launcher owns a run running on this host outside
    SLURM: it is taken again, and its worker waits for the orphan to let go of the run
    (``RunFolder.claim``), which resumes it or finds it done. Nothing is trained twice or left out."""
    import socket

    here = socket.gethostname()
    out = []
    for run in runs:
        if states[run.id] != State.RUNNING:
            continue
        attempts = RunFolder(study.runs_dir / run.id).read().attempts
        last = attempts[-1] if attempts else {}
        if last.get("host") == here and not ((last.get("provenance") or {}).get("slurm") or {}).get("slurm_job_id"):
            out.append(run)
    return out


def left_alone(runs: list[Run], states: dict[str, str], todo: list[Run], state: str) -> int:
    """The selected runs in ``state`` a launch does not run (done ones; stale ones without --rerun stale)."""
    doing = {r.id for r in todo}
    return sum(1 for r in runs if r.id not in doing and states[r.id] == state)


def refuse_missing_data(todo: list[Run], selected: list[Run]) -> None:
    """Before any worker starts: every dataset the runs to do need must be on disk, or the
    launch stops with what is missing and how to leave those cells out."""
    missing = missing_data(todo)
    if not missing:
        return
    absent = {m.dataset for m in missing}
    present = sorted({r.dataset for r in selected} - absent)
    lines = [f"dataset {m.dataset} ({m.runs} run(s) to do): {m.problem}" for m in missing]
    hint = (f"or leave those cells out: --where dataset={','.join(present)}" if present else
            "nothing else selected can run without it")
    raise DataError("\n".join(lines + [hint]))


def refuse_too_wide(todo: list[Run], slots: list[Slot]) -> None:
    """A run with ``gpus_per_run = N`` needs N slots of this launch at once."""
    from runner.launch.dispatch import ranks_of

    wide = max(todo, key=ranks_of)
    if ranks_of(wide) > len(slots):
        kind = "--gpus N (or --per-gpu K)" if slots[0].device == "cuda" else "--workers N"
        raise BackendError(f"{wide.label}: gpus_per_run = {ranks_of(wide)}, but this launch has {len(slots)} "
                           f"slot(s); give it at least {ranks_of(wide)} with {kind}")


def prepare_folders(study: Study, todo: list[Run], records: dict[str, RunRecord]) -> None:
    """Write run.json of each run to do, lift cancel requests and SLURM claims (the run is
    launched again on purpose), and set aside the summary of a stale run rerun on request."""
    for run in todo:
        folder = RunFolder(study.runs_dir / run.id)
        folder.create(run_json(run, study))
        folder.clear_cancel()
        folder.file(JOB_FILE).unlink(missing_ok=True)
        if records.get(run.id) and records[run.id].state == State.DONE:
            folder.supersede()
        elif records.get(run.id) and records[run.id].state == State.CORRUPT:
            folder.set_aside_corrupt()  # --rerun corrupt: kept beside it as NAME.corrupt-<time>


def launch(study: Study, runs: list[Run], store: Store, slots: list[Slot], display: Display, *,
           rerun: set[str] = frozenset(), retries: int = 2, isolate: bool = False,
           stop_grace_s: float = 30.0) -> LaunchResult:
    """Run what is left of ``runs`` on ``slots``. ``retries``: how many more attempts a run gets
    when its worker dies or hangs; ``isolate``: one fresh worker process per run."""
    from runner.launch.dispatch import Dispatcher

    lost_after = lost_after_s()  # a bad RUNNER_LOST_AFTER_S stops the launch before anything starts
    result = LaunchResult(selected=len(runs))
    with launch_lock(study.runs_dir) as lock:
        store.ingest(study.runs_dir)
        records = store.runs([r.id for r in runs])
        todo, states = runs_to_do(runs, records, git_commit(study.dir), rerun, fingerprint.current().hash)
        todo += orphaned_here(study, runs, states)
        result.already_done = left_alone(runs, states, todo, State.DONE)
        result.stale = left_alone(runs, states, todo, State.STALE)
        result.corrupt = left_alone(runs, states, todo, State.CORRUPT)
        if not todo:
            return result
        refuse_missing_data(todo, runs)
        refuse_too_wide(todo, slots)
        lock.announce([r.id for r in todo])
        try:
            prepare_folders(study, todo, records)
        except OSError as e:
            if not no_space(e):
                raise
            raise BackendError(f"{e}; nothing started: free some space and launch again") from None
        store.ingest(study.runs_dir, [r.id for r in todo])
        Dispatcher(study, todo, store, slots, display, result, lock, retries=retries, isolate=isolate,
                   lost_after_s=lost_after, stop_grace_s=stop_grace_s).run()
        try:
            store.ingest(study.runs_dir, [r.id for r in todo])
        except StoreError as e:  # a full disk: the folders hold everything, the next command catches up
            if "no space left" not in str(e):
                raise
            result.stopped_for = result.stopped_for or str(e)
    return result


def slurm_groups(todo: list[Run], by_id: dict[str, Run]) -> list[list[Run]]:
    """One job array per stage and number of processes per run, upstream stages first: a task's
    resources fit every run of its array, and a stage's array waits for the arrays it starts from
    (``by_id``: every run of the launch, so a run whose upstream was submitted earlier is not stage 1)."""
    from runner.launch.dispatch import ranks_of

    stage = depths(todo, by_id)
    groups: dict[tuple[int, int], list[Run]] = {}
    for r in todo:
        groups.setdefault((stage[r.id], ranks_of(r)), []).append(r)
    return [groups[k] for k in sorted(groups)]


@dataclass
class SubmitResult:
    selected: int = 0
    already_done: int = 0
    stale: int = 0
    corrupt: int = 0
    submitted: int = 0
    job_ids: list[str] = field(default_factory=list)  # one per array task
    in_slurm: int = 0  # left alone: their task may still run them
    unknown: int = 0  # of those, tasks SLURM said nothing about


def submit_to_slurm(study: Study, runs: list[Run], store: Store, options, *, rerun: set[str] = frozenset()) -> SubmitResult:
    """Submit what is left of ``runs`` as a SLURM job array (``options``: a validated SlurmOptions)
    and return at once; ``runner status`` follows the runs. A run whose earlier task is waiting or
    running is not submitted twice; one whose task SLURM no longer knows is not either (it may
    still run: its state shows as unknown)."""
    from runner.backends.slurm import SlurmBackend, require_slurm
    from runner.launch.dispatch import ranks_of

    require_slurm()
    backend = SlurmBackend(study, options)
    result = SubmitResult(selected=len(runs))
    with launch_lock(study.runs_dir):
        store.ingest(study.runs_dir)
        records = store.runs([r.id for r in runs])
        todo, states = runs_to_do(runs, records, git_commit(study.dir), rerun, fingerprint.current().hash)
        result.already_done = left_alone(runs, states, todo, State.DONE)
        result.stale = left_alone(runs, states, todo, State.STALE)
        result.corrupt = left_alone(runs, states, todo, State.CORRUPT)
        tasks = {r.id: t for r in todo if (t := backend.handle_of(r.id))}
        answers = backend.poll(set(tasks.values()))

        def may_still_run(run: Run) -> bool:
            if run.id not in tasks or RunFolder(study.runs_dir / run.id).cancel_requested():
                return False  # never submitted, or cancelled (its old task will leave it alone)
            return answers.get(tasks[run.id]) not in backend.final

        waiting = [r for r in todo if may_still_run(r)]
        result.in_slurm = len(waiting)
        result.unknown = sum(1 for r in waiting if tasks[r.id] not in answers)
        todo = [r for r in todo if r not in waiting]
        if not todo:
            return result
        refuse_missing_data(todo, runs)
        prepare_folders(study, todo, records)
        if len({r.cell for r in todo}) > 1:
            from runner.launch.estimate import expected_seconds, longest_first

            todo = longest_first(todo, expected_seconds(todo, store.history()))
        task_of_run = {r.id: tasks[r.id] for r in waiting}  # upstreams submitted earlier, still to run
        for group in slurm_groups(todo, {r.id: r for r in runs}):
            after = sorted({task_of_run[r.upstream].split("_")[0] for r in group if r.upstream in task_of_run})
            # dealt round-robin from longest to shortest: each task starts with a long run and chunks even out
            n = -(-len(group) // options.per_task)
            chunks = [[r.id for r in group[i::n]] for i in range(n)]
            ids = backend.submit(chunks, job_name=f"runner-{study.name}", ranks=ranks_of(group[0]), after=after)
            task_of_run |= {rid: task for chunk, task in zip(chunks, ids) for rid in chunk}
            result.job_ids += ids
        result.submitted = len(todo)
        store.ingest(study.runs_dir, [r.id for r in todo])
    return result
