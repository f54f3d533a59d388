"""``runner tune NAME``: an Optuna study over the cells a ``[tune.NAME]`` block matches.

* **Storage.** Optuna's own RDB storage on the study's database (its tables beside ours,
  which carry the ``mr_`` prefix), so ``optuna.load_study(study_name="STUDY/NAME",
  storage=URL)`` and optuna-dashboard read it. This process asks and tells every trial: it
  stays the only writer of the database, as in a launch.
* **Trials are runs.** A trial trains one run per tuned cell (the cell's config with the
  sampled values and the block's epoch budget, label ``tune/NAME/tK``), dispatched to the
  launch's workers (``runner/launch/dispatch.py`` with this module as its feed) or, with
  ``--backend slurm``, submitted as SLURM jobs (``runner/tune/slurm.py``; both start from
  ``tuning`` below), with the same run folder, provenance and metric series as any run. A
  trial's value is the mean of its runs' ``metric``. A configuration already trained is not
  trained again: its run is reused.
* **Pruning.** Workers log the validation metric every epoch in the run folder; each second
  the tuner reports what is new to Optuna (the mean over the trial's runs) and, when the
  pruner says so, writes ``prune.json`` into the trial's folders: the worker stops at the next
  step and the trial is told pruned.
* **Resuming.** Killed at any point, the next ``runner tune NAME`` finds the trials left
  running: those with run folders continue (each run from its checkpoint), the others become
  failed trials. It then asks new trials until ``trials`` have finished (complete or pruned).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from runner.errors import BackendError, SpecError, choices
from runner.launch.lock import HeldLock, launch_lock
from runner.plan.expand import derive
from runner.plan.runs import Plan, Run
from runner.study.selectors import axes_of, matches, unknown_key
from runner.records.runfolder import RunFolder, lost_after_s
from runner.study.spec import Study
from runner.records.store import Store
from runner.states import SETTLED, State
from runner.study.tune import Tune
from runner.tune.study import open_study, optuna_name

MAX_FAILED_IN_A_ROW = 5


def tuned_cells(study: Study, plan: Plan, tune: Tune) -> list[Run]:
    """One run per cell the block matches (the first of its seeds), in plan order."""
    where = f"[tune.{tune.name}] match"
    for key in tune.match:
        problem = unknown_key(plan.runs, key)
        if problem:
            raise SpecError(study.file, where, f"{key}: {problem}")
    cells: dict[str, Run] = {}
    for run in plan.runs:
        if run.cell not in cells and matches(axes_of(run), run.config, tune.match):
            cells[run.cell] = run
    if not cells:
        raise SpecError(study.file, where, "matches no cell of the study; its architectures: "
                                           f"{choices({r.architecture for r in plan.runs})}, datasets: "
                                           f"{choices({r.dataset for r in plan.runs})}")
    return list(cells.values())


def trial_assignments(tune: Tune, params: dict[str, Any]) -> dict[str, Any]:
    """What a trial sets on each tuned cell: the epoch budget, then the sampled values."""
    return ({"epochs": tune.epochs} if tune.epochs else {}) | params


def check_space(study: Study, tune: Tune, cells: list[Run]) -> None:
    """Every edge of the space (each choice, each bound) must make a valid run of every tuned
    cell: a wrong type or an impossible shape is refused before any trial trains."""
    for p in tune.space:
        for value in p.edges():
            for base in cells:
                derive(study, base, trial_assignments(tune, {p.key: value}), label=base.label,
                       where=f"[tune.{tune.name}] space {p.key} = {value!r}:", seed=tune.seed)


def cell_label(run: Run) -> str:
    """A run's label without its seed: the cell it belongs to."""
    return run.label.rsplit("/", 1)[0]


@dataclass
class TuneResult:
    name: str  # the Optuna study's
    target: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    resumed: int = 0  # trials left running by an earlier tuner, continued
    reused: int = 0  # trials whose configuration was already trained
    interrupted: bool = False
    stopped_for: str | None = None  # why it gave up before the target
    best: dict | None = None  # {number, value, params}
    last_failure: str | None = None


@dataclass
class _Trial:
    trial: Any  # optuna.trial.Trial
    runs: list[Run]
    reported: set[int] = field(default_factory=set)
    pruned_at: int | None = None


class Tuner:
    """The dispatcher's feed for one ``[tune.NAME]`` block (see ``runner.launch.dispatch.Feed``)."""

    def __init__(self, study: Study, tune: Tune, cells: list[Run], ostudy, store: Store, display, target: int):
        self.study, self.tune, self.cells, self.ostudy = study, tune, cells, ostudy
        self.store, self.display, self.target = store, display, target
        self.active: dict[int, _Trial] = {}  # trial number -> its runs, while not told
        self.holders: dict[str, list[int]] = {}  # run id -> trials waiting on it
        self.result = TuneResult(optuna_name(study, tune), target)
        self.failed_in_a_row = 0
        import optuna

        self.states = optuna.trial.TrialState
        self.finished = sum(1 for t in ostudy.get_trials(deepcopy=False)
                            if t.state in (self.states.COMPLETE, self.states.PRUNED))

    def folder(self, run: Run) -> RunFolder:
        return RunFolder(self.study.runs_dir / run.id)

    # ------------------------------------------------------------------ trials left by an earlier tuner

    def adopt(self, *, orphans_exit: bool = True) -> list[Run]:
        """Trials an earlier tuner left running: continue those with runs, fail the others.
        ``orphans_exit``: a run still training belongs to a dead tuner's worker, which exits at
        once (local); on SLURM it trains on in its task and is watched, not waited for."""
        import optuna

        queue: list[Run] = []
        for ft in self.ostudy.get_trials(deepcopy=False, states=(self.states.RUNNING,)):
            trial = optuna.trial.Trial(self.ostudy, ft._trial_id)  # FrozenTrial keeps the storage id private
            ids = ft.user_attrs.get("runs") or []
            runs = [r for r in (self._run_of(i) for i in ids) if r is not None]
            if not ids or len(runs) != len(ids):
                self._fail(trial, ft.number, "the tuner stopped before this trial's run folders were written")
                continue
            if orphans_exit:
                _wait_for_orphans(runs, self.folder)
            self.active[ft.number] = _Trial(trial, runs, reported=set(ft.intermediate_values))
            self.result.resumed += 1
            queue.extend(self._hold(ft.number, runs, resume=True))
        return queue

    def _run_of(self, run_id: str) -> Run | None:
        """Rebuild a trial's Run from its folder's run.json (the study file is not needed)."""
        info = RunFolder(self.study.runs_dir / run_id).read().run
        if not info:
            return None
        return Run(info["id"], info["cell"], info["label"], info["architecture"], info["dataset"], info["seed"],
                   tuple(info.get("matrices") or ()), info["config"], info.get("upstream"))

    # ------------------------------------------------------------------ the feed

    def more(self) -> list[Run]:
        """Runs of one new trial for a free slot, while trials are wanted."""
        while True:
            if self.finished + len(self.active) >= self.target:
                return []
            if self.failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                self.result.stopped_for = (f"{MAX_FAILED_IN_A_ROW} trials in a row failed, the last with: "
                                           f"{self.result.last_failure}")
                return []
            runs = self._new_trial()
            if runs:
                return runs

    def _new_trial(self) -> list[Run]:
        trial = self.ostudy.ask()
        n = trial.number
        try:
            params = {p.key: p.suggest(trial) for p in self.tune.space}
            label = f"tune/{self.tune.name}/t{n}"
            runs = [derive(self.study, base, trial_assignments(self.tune, params),
                           label=label if len(self.cells) == 1 else f"{label}/{cell_label(base)}",
                           where=f"[tune.{self.tune.name}] trial {n}:", seed=self.tune.seed) for base in self.cells]
        except SpecError as e:  # values the space allows but the cell does not (heads not dividing dim)
            self._fail(trial, n, e.detail)
            return []
        trial.set_user_attr("runs", [r.id for r in runs])
        trial.set_user_attr("labels", [r.label for r in runs])
        self.active[n] = _Trial(trial, runs)
        return self._hold(n, runs)

    def _hold(self, number: int, runs: list[Run], *, resume: bool = False) -> list[Run]:
        """Prepare the trial's folders; return the runs to train (not those done, or already in
        flight for another trial), and settle the trial if nothing is left to train. A run lost
        when an earlier tuner died (``resume``) trains on from its checkpoint."""
        from runner.launch.scheduler import run_json

        final = SETTLED - {State.LOST} if resume else SETTLED
        todo, trained = [], 0
        for run in runs:
            waiting = self.holders.setdefault(run.id, [])
            waiting.append(number)
            folder = self.folder(run)
            known = folder.file("run.json").exists()
            if known and folder.read().state in final:
                trained += 1
                continue
            if len(waiting) > 1:
                continue
            if not known:  # a matrix run of the same config keeps its own label
                tag = {"name": self.tune.name, "study": self.result.name, "trial": number}
                folder.create(run_json(run, self.study) | {"tune": tag})
            folder.clear_cancel()
            todo.append(run)
        if trained == len(runs):
            self.result.reused += not resume
            self._maybe_settle(number)
        return todo

    def settled(self, run: Run, state: State, reason: str | None) -> None:
        if state not in SETTLED:
            return  # cancelled (interrupted): the trial stays running and is resumed by the next `runner tune`
        for number in list(self.holders.get(run.id, ())):
            self._maybe_settle(number)

    def watch(self, in_flight: list[str]) -> None:
        """Report new epochs of the trials in flight; prune those the pruner gives up on."""
        flying = set(in_flight)
        for number, t in list(self.active.items()):
            if t.pruned_at is None and any(r.id in flying for r in t.runs) and self._report(t):
                last_epoch = max(r.config["train"]["epochs"] for r in t.runs)
                if max(t.reported) < last_epoch and t.trial.should_prune():  # nothing to save after the last
                    self._prune(number, t)

    # ------------------------------------------------------------------ reporting, pruning, telling

    def _curve(self, t: _Trial) -> dict[int, float]:
        """The trial's watched metric per epoch: the mean over its runs, where all of them have it."""
        per_run = []
        for run in t.runs:
            per_run.append({m["epoch"]: m[self.tune.watch] for m in self.folder(run).metrics()
                            if _finite(m.get(self.tune.watch))})
        common = set.intersection(*(set(c) for c in per_run)) if per_run else set()
        return {e: sum(c[e] for c in per_run) / len(per_run) for e in sorted(common)}

    def _report(self, t: _Trial) -> bool:
        """Report epochs Optuna has not seen; True if there were any."""
        new = [(e, v) for e, v in self._curve(t).items() if e not in t.reported]
        for epoch, value in new:
            t.trial.report(value, epoch)
            t.reported.add(epoch)
        return bool(new)

    def _prune(self, number: int, t: _Trial) -> None:
        epoch = max(t.reported)
        value = self._curve(t).get(epoch)
        t.pruned_at = epoch
        for run in t.runs:
            if len(self.holders.get(run.id, ())) == 1:  # a run shared with another trial trains on for it
                self.folder(run).request_prune({"trial": number, "epoch": epoch, "metric": self.tune.watch,
                                                "value": value})
        self.display.message(f"trial {number} pruned after epoch {epoch}: {self.tune.watch} = {_fmt(value)}")

    def _maybe_settle(self, number: int) -> None:
        t = self.active.get(number)
        if t is None:
            return
        states = [self.folder(r).read() for r in t.runs]
        if any(s.state not in SETTLED for s in states):
            return
        self._report(t)
        for run in t.runs:
            waiting = self.holders.get(run.id, [])
            if number in waiting:
                waiting.remove(number)
        del self.active[number]
        if all(s.state == State.DONE for s in states):
            values = [(s.summary or {}).get(self.tune.metric) for s in states]
            if not all(_finite(v) for v in values):
                return self._fail(t.trial, number, f"a run's summary has no finite {self.tune.metric}")
            value = sum(values) / len(values)
            self.ostudy.tell(t.trial, value)
            self.finished += 1
            self.failed_in_a_row = 0
            self.result.complete += 1
            best = self.best()
            self.display.message(f"trial {number}: {self.tune.metric} = {_fmt(value)} ({_params_text(t.trial.params)})"
                                 + (f"; best: trial {best['number']} = {_fmt(best['value'])}" if best else ""))
        elif any(s.state == State.PRUNED for s in states) or t.pruned_at is not None:
            self.ostudy.tell(t.trial, state=self.states.PRUNED)
            self.finished += 1
            self.failed_in_a_row = 0
            self.result.pruned += 1
        else:
            bad = next(s for s in states if s.state in (State.FAILED, State.LOST))
            self._fail(t.trial, number, bad.reason or bad.state)

    def _fail(self, trial, number: int, reason: str) -> None:
        trial.set_user_attr("reason", reason)
        self.ostudy.tell(trial, state=self.states.FAIL)
        self.active.pop(number, None)
        self.failed_in_a_row += 1
        self.result.failed += 1
        self.result.last_failure = reason
        self.display.message(f"trial {number} failed: {reason}")

    def best(self) -> dict | None:
        try:
            b = self.ostudy.best_trial
        except ValueError:  # no complete trial yet
            return None
        return {"number": b.number, "value": b.value, "params": dict(b.params)}


def _wait_for_orphans(runs: list[Run], folder, timeout_s: float = 30.0) -> None:
    """The workers of a tuner killed with ``kill -9`` see their input close, mark their run
    interrupted and exit within a second or so: wait for that rather than train a run twice."""
    import time

    deadline = time.monotonic() + timeout_s
    while any(folder(r).read().state == State.RUNNING for r in runs):
        if time.monotonic() > deadline:
            busy = next(r for r in runs if folder(r).read().state == State.RUNNING)
            raise BackendError(f"run {busy.id} ({busy.label}) of a trial left running is still training "
                               "(an earlier tuner's worker); stop it, or wait for it and run the command again")
        time.sleep(0.5)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in params.items())


@contextmanager
def tuning(study: Study, plan: Plan, tune: Tune, store: Store, display,
           trials: int | None) -> Iterator[tuple[Tuner, HeldLock]]:
    """What tuning on any backend shares: the block's cells and space checked before anything
    trains, the study's lock, its datasets on disk, the Optuna study and its feed; once the
    trials have run, the best trial and a last ingest of the folders."""
    from runner.launch.scheduler import refuse_missing_data

    cells = tuned_cells(study, plan, tune)
    check_space(study, tune, cells)
    with launch_lock(study.runs_dir) as lock:
        refuse_missing_data(cells, cells)
        tuner = Tuner(study, tune, cells, open_study(study, tune, cells, create=True), store, display,
                      trials or tune.trials)
        yield tuner, lock
        tuner.result.best = tuner.best()
        store.ingest(study.runs_dir)


def tune(study: Study, plan: Plan, tune: Tune, store: Store, slots, display, *, trials: int | None = None,
         retries: int = 2, stop_grace_s: float = 30.0) -> TuneResult:
    """Run the block's study on local workers until ``trials`` (default: the block's) trials have
    finished: the dispatcher keeps the slots busy with the tuner's trials."""
    from runner.launch.dispatch import Dispatcher
    from runner.launch.scheduler import LaunchResult

    lost_after = lost_after_s()
    with tuning(study, plan, tune, store, display, trials) as (tuner, lock):
        queue = tuner.adopt()
        launch = LaunchResult()
        Dispatcher(study, queue, store, slots, display, launch, lock, retries=retries, isolate=False,
                   lost_after_s=lost_after, stop_grace_s=stop_grace_s, feed=tuner).run()
        tuner.result.interrupted = launch.interrupted
    return tuner.result
