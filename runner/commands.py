"""The plain functions behind each CLI command: they take options, return data, print nothing.

``cli.py`` parses and renders; tests and notebooks call these directly. Nothing
here imports torch: only ``launch`` starts workers, which import it themselves.
The report's data is gathered here (``report_data``) and handed to ``analysis/``, which reads
the store and never the plan: the one arrow from ``runner/`` into ``analysis/`` besides the CLI's
(``tests/test_layering.py``).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from runner.errors import DataError, SelectionError, choices
from runner.launch.data_check import missing_data
from runner.plan.diff import count_states, effective_states
from runner.plan.expand import expand
from runner.plan.runs import Plan, Run
from runner.plan.select import select
from runner.plan.stages import depths, with_upstreams
from runner.records.provenance import git_commit
from runner.records.runfolder import RunFolder
from runner.states import State
from runner.study.selectors import parse_where
from runner.study.spec import Study, data_root, load_study

if TYPE_CHECKING:  # sqlalchemy costs 0.25 s to import: only commands that touch a store pay it
    from analysis.data import ReportData
    from analysis.report import Report
    from runner.records.store import RunRecord, Store


@dataclass(frozen=True)
class Selection:
    study: Study
    plan: Plan
    runs: list[Run]


def load(file: str | Path, matrix: Iterable[str] = (), where: Iterable[str] = ()) -> Selection:
    """Parse, validate and expand the study, then select runs by ``--matrix``/``--where``."""
    study = load_study(file)
    plan = expand_cached(study)
    return Selection(study, plan, select(plan, matrix=list(matrix), where=parse_where(where)))


def expand_cached(study: Study) -> Plan:
    """``expand(study)``, from the user cache (``runner/cache.py``) when neither the study file
    nor any file of the code that reads and expands it changed since it was cached: a quarter of
    ``runner status`` at 10,000 runs. An expansion that fails is never cached, nor one that reads
    data folders (an image folder's class count can change with no file of ours changing)."""
    import pydantic

    from runner import cache

    if _expansion_reads_data(study):
        return expand(study)
    entry = cache.key(cache.stamp([study.file, *_expansion_code()]), os.path.realpath(study.file), pydantic.VERSION,
                      sys.executable)
    runs = cache.load("plans", entry)
    if isinstance(runs, tuple):
        return Plan(study, runs)
    plan = expand(study)
    cache.save("plans", entry, plan.runs)
    return plan


def _expansion_reads_data(study: Study) -> bool:
    """True when a dataset of the study is of a source whose options look at its files when the
    plan is expanded (``Options.PLAN_READS_DATA``); an unknown source fails the expansion anyway."""
    import datasets

    return any(getattr(getattr(datasets.get_source(d.source), "options", None), "PLAN_READS_DATA", False)
               for d in study.datasets.values())


def _expansion_code() -> list[str]:
    """Every file of runner's, the architectures' and the datasets' packages: what reads, checks
    and expands a study (its schemas, defaults, id rule and the timm catalogue)."""
    import architectures
    import datasets

    out = []
    for package in (Path(__file__).parent, Path(architectures.__file__).parent, Path(datasets.__file__).parent):
        for folder, dirs, files in os.walk(package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            out += [os.path.join(folder, f) for f in sorted(files) if f.endswith((".py", ".json"))]
    return out


def with_upstream_runs(sel: Selection) -> Selection:
    """The selection and the upstream runs it starts from (``runner launch`` trains them first)."""
    return Selection(sel.study, sel.plan, with_upstreams(sel.runs, sel.plan.by_id()))


def refuse_before_writing(sel: Selection, slots=None) -> None:
    """A launch into a study with no store yet refuses missing data (and runs wider than the
    slots) before it creates the database, the run folders or the lock: a refused launch writes
    nothing. With a store, the launcher checks the same under its lock, against what is done."""
    from runner.study.spec import sqlite_path

    path = sqlite_path(sel.study.store)
    if path is None or path.exists() or _has_folders(sel.study):
        return
    from runner.launch.scheduler import refuse_missing_data, refuse_too_wide

    refuse_missing_data(sel.runs, sel.runs)
    if slots is not None:
        refuse_too_wide(sel.runs, slots)


def open_store(study: Study, *, create: bool, rebuild: bool = False) -> "Store | None":
    """The study's store (None: a SQLite file not there and not to be created). ``create`` is
    asked by the commands that write results: their places must be writable, or one line says
    which is not. ``rebuild``: a store of another schema is made anew (``runner sync --rebuild``)."""
    from runner.study.spec import sqlite_path

    path = sqlite_path(study.store)
    if path is not None and not path.exists() and not create:
        return None
    if create:
        refuse_unwritable(study)
    from runner.records.store import Store

    return Store.open(study.store, study.runs_dir, create=create, rebuild=rebuild)


def refuse_unwritable(study: Study) -> None:
    """Commands that write results (launch, tune, probe, sync) stop before writing anything when
    the run folders or the SQLite store cannot be written; reading commands read them as they are."""
    from runner.errors import StoreError
    from runner.records.places import unwritable
    from runner.study.spec import sqlite_path

    store = sqlite_path(study.store)
    for key, place in (("runs_dir", study.runs_dir), ("store", store.parent if store is not None else None)):
        if place is not None and (why := unwritable(place)):
            raise StoreError(f"{study.file}: [study] {key}: {why}; this command writes results there: "
                             "make it writable or point the study elsewhere (reading commands work as they are)")


def _has_folders(study: Study) -> bool:
    return study.runs_dir.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in study.runs_dir.iterdir())


def store_for(study: Study, *, ingest: bool) -> "Store | None":
    """The study's store, None if it does not exist yet; with ``ingest`` the run folders are read
    into it first (creating it when there are folders to read). Results that cannot be written
    (a read-only mount, someone else's folder) are read through a temporary copy instead."""
    from runner.records.places import read_only_reason
    from runner.study.spec import sqlite_path

    why = read_only_reason(study.runs_dir, sqlite_path(study.store))
    if why is not None:
        return _read_only_store(study, why, ingest=ingest)
    store = open_store(study, create=ingest and _has_folders(study))
    if store is not None and ingest:
        store.ingest(study.runs_dir)
    return store


def _read_only_store(study: Study, why: str, *, ingest: bool) -> "Store | None":
    """A reading command on results it cannot write: a SQLite store is copied into a temporary
    file (removed at exit) and the run folders are ingested into the copy, so the command still
    shows what the folders say and writes nothing of the study. A server's store is read as it
    is (its ingestion lock lives in the run folders)."""
    import atexit
    import shutil
    import sqlite3
    import sys
    import tempfile

    from runner.records.store import Store
    from runner.study.spec import sqlite_path

    path = sqlite_path(study.store)
    if path is None:
        if ingest:
            print(f"note: {why}: the run folders were not read into {study.store}; it may be behind them",
                  file=sys.stderr)
        return Store(study.store, lock_dir=study.runs_dir)
    if not path.exists() and not (ingest and _has_folders(study)):
        return None
    tmp = Path(tempfile.mkdtemp(prefix="runner-readonly-"))
    atexit.register(shutil.rmtree, tmp, True)
    copy = tmp / "runner.db"
    if path.exists():
        # immutable: a read-only folder has no room for SQLite's lock files, and nothing writes there
        with sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
    store = Store(f"sqlite:///{copy}", lock_dir=tmp)
    if ingest and _has_folders(study):
        store.ingest(study.runs_dir)
    print(f"note: {why}: read through a temporary copy of the results index; nothing was written",
          file=sys.stderr)
    return store


def records_for(sel: Selection, *, ingest: bool, details: bool = True) -> "dict[str, RunRecord]":
    """Store records of the selected runs; with ``ingest`` the run folders are read into the store first."""
    return records_in(sel, store_for(sel.study, ingest=ingest), details=details)


def records_in(sel: Selection, store: "Store | None", *, details: bool = True) -> "dict[str, RunRecord]":
    """Store records of the selected runs and their upstreams (whose state decides if a run is
    stale). A run the store last saw running is asked its folder: ``plan`` reads without ingesting,
    and a launch stopped by Ctrl-C leaves the index at "running" while the folder says cancelled;
    ``plan``, ``status`` and ``show`` must name it the same way."""
    if store is None:
        return {}
    records = store.runs([r.id for r in with_upstreams(sel.runs, sel.plan.by_id())], details=details)
    for run_id, rec in records.items():
        if rec.state == State.RUNNING:
            now = RunFolder(sel.study.runs_dir / run_id).read()
            if now.state in (State.CANCELLED, State.LOST):  # an ended one waits for the next ingest
                records[run_id] = rec._replace(state=now.state, reason=now.reason)
    return records


def run_entries(sel: Selection, records: "dict[str, RunRecord]", *, queued: Iterable[str] = (),
                with_config: bool = False) -> list[dict[str, Any]]:
    """One dict per selected run in the shape of ``status --json``; ``queued``: the runs a running
    launcher will do, shown as queued until they start."""
    queued = set(queued)
    by_id = sel.plan.by_id()
    states, why_stale = effective_states(sel.runs, records, git_commit(sel.study.dir), by_id, current_code().hash)
    why_stale = with_code_changes(why_stale, records)
    stage = depths(sel.runs, by_id) if any(r.upstream for r in sel.runs) else {}
    out = []
    for run in sel.runs:
        rec = records.get(run.id)
        state = states[run.id]
        if (state in (State.MISSING, State.LOST, State.CANCELLED) and run.id in queued
                and not RunFolder(sel.study.runs_dir / run.id).cancel_requested()):
            state = State.QUEUED
        entry = {"id": run.id, "label": run.label, "state": state, "matrix": list(run.matrices),
                 "cell": run.cell, "summary": rec.summary if rec else None,
                 "reason": why_stale.get(run.id) or (rec.reason if rec else None),
                 "progress": rec.progress if rec and state == State.RUNNING else None,
                 "attempts": rec.attempts if rec else 0, "warnings": list(rec.warnings) if rec else []}
        if run.upstream:
            entry |= {"upstream": run.upstream, "stage": stage[run.id]}
        if with_config:
            entry["config"] = run.config
        out.append(entry)
    return out


def orphans(sel: Selection, store: "Store | None") -> "list[RunRecord]":
    """Done runs in the store that the study no longer plans (orphaned by an edit or a rename),
    newest first; nothing is deleted. Tuning trials belong to no matrix and are not orphans."""
    if store is None:
        return []
    planned = {r.id for r in sel.plan.runs}
    gone = [i for i in store.ids(state=State.DONE) if i not in planned]
    found = [r for r in store.runs(gone, details=False).values() if r.matrices]
    return sorted(found, key=lambda r: -(r.finished_at or 0.0))


def explain(sel: Selection, entries: list[dict[str, Any]], store: "Store | None",
            gone: "list[RunRecord]") -> None:
    """For each missing run whose label a done orphan has, the keys that differ from it and the
    block that set each new value: ``train.lr 0.002 -> 0.003 ([[override]] #1 set)``. Adds
    ``changed_from`` to those entries."""
    by_label: dict[str, Any] = {}
    for rec in gone:
        by_label.setdefault(rec.label, rec)  # the newest done one of that label
    runs = sel.plan.by_id()
    for e in entries:
        old = by_label.get(e["label"]) if e["state"] == State.MISSING else None
        if old is None or store is None:
            continue
        run = runs[e["id"]]
        e["changed_from"] = {"run": old.id, "changes": config_changes(store.config(old.id) or {}, run)}


def config_changes(old: dict[str, Any], run: Run) -> list[str]:
    """``section.key old -> new (origin)`` for each key whose value differs from an older config."""
    from runner.study.messages import show_value

    out = []
    for section in ("architecture", "dataset", "train"):
        before, now = old.get(section) or {}, run.config.get(section) or {}
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                origin = run.origins.get((section, key))
                shown = lambda v: "(unset)" if v is None else show_value(v)  # noqa: E731
                out.append(f"{section}.{key} {shown(before.get(key))} -> {shown(now.get(key))}"
                           + (f" ({origin})" if origin else ""))
    if old.get("seed") != run.config.get("seed"):
        out.append(f"seed {old.get('seed')} -> {run.config.get('seed')}")
    return out or ["the same config (its id changed with the runner's id rule)"]


def current_code():
    """The fingerprint of the training code installed now (``runner/records/fingerprint.py``)."""
    from runner.records.fingerprint import current

    return current()


def with_code_changes(why_stale: dict[str, str], records: "dict[str, RunRecord]") -> dict[str, str]:
    """Each stale run's reason with the files changed since its fingerprint (one folder read per
    distinct fingerprint: thousands of runs trained by one code version share it)."""
    changed: dict[str | None, str] = {}
    out = {}
    for i, why in why_stale.items():
        rec = records.get(i)
        if rec is not None and rec.code_hash not in changed:
            changed[rec.code_hash] = code_changes(rec)
        out[i] = why + (changed[rec.code_hash] if rec is not None else "")
    return out


def code_changes(record: "RunRecord | None") -> str:
    """``; changed: architectures/vit/model.py, ...``: what differs from the fingerprint a done run
    recorded (read from its folder's last attempt), empty when it recorded none."""
    if record is None or record.code_hash is None:
        return ""
    from runner.records.fingerprint import changes

    attempts = RunFolder(Path(record.folder)).read().attempts
    recorded = ((attempts[-1].get("provenance") or {}).get("code") if attempts else None)
    changed = changes(recorded, current_code())
    return f"; changed: {', '.join(changed[:6])}{' and more' if len(changed) > 6 else ''}" if changed else ""


def join_slurm(sel: Selection, entries: list[dict[str, Any]]) -> None:
    """Add SLURM's view to the runs submitted as array tasks and not finished: ``job`` (task id and
    SLURM's state) on each, and the state that view implies. A waiting task means queued; a task
    SLURM gives no answer about means unknown (never guessed dead); a task that ended without
    finishing its run leaves it lost (or cancelled), with SLURM's word in the reason."""
    from runner.backends.slurm import SlurmBackend

    slurm = SlurmBackend(sel.study)

    tasks = {}
    for e in entries:
        if e["state"] not in (State.DONE, State.FAILED, State.STALE):
            task = slurm.handle_of(e["id"])
            if task is not None:
                tasks[e["id"]] = task
    if not tasks:
        return
    answers = slurm.poll(set(tasks.values()))
    for e in entries:
        task = tasks.get(e["id"])
        if task is None:
            continue
        said = answers.get(task)
        e["job"] = {"id": task, "state": said}
        if said is None:
            # a fresh heartbeat proves it runs, a cancel request that it never will (SLURM keeps no
            # record of array tasks cancelled before they started); anything else may still run
            if e["state"] not in (State.RUNNING, State.CANCELLED):
                e["state"], e["reason"] = State.UNKNOWN, f"SLURM has no record of task {task} (squeue and sacct)"
        elif said in slurm.waiting:
            e["state"] = State.QUEUED
        elif said in slurm.running:
            e["state"] = State.RUNNING if e["state"] == State.RUNNING else State.QUEUED
        elif e["state"] in (State.MISSING, State.RUNNING, State.LOST, State.CANCELLED):
            ended = f"SLURM task {task} ended {said} (log: {slurm.log_of(e['id'])})"
            if e["state"] in (State.MISSING, State.RUNNING):
                e["state"] = State.CANCELLED if said == "CANCELLED" else State.LOST
            e["reason"] = f"{ended}: {e['reason']}" if e.get("reason") else f"{ended} before the run finished"


def overview(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"counts": count_states(e["state"] for e in entries), "runs": entries}


def data_warnings(sel: Selection, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Datasets missing on disk for runs not done yet: ``{dataset, problem, runs}`` each."""
    pending = {e["id"] for e in entries if e["state"] != State.DONE}
    return [m.__dict__ for m in missing_data(r for r in sel.runs if r.id in pending)]


def eta_seconds(progress: dict | None) -> float | None:
    """Remaining time of a running run from its per-epoch times so far."""
    if not progress or not progress.get("epoch"):
        return None
    per_epoch = (progress.get("metrics") or {}).get("epoch_time_s")
    if not per_epoch:
        return None
    return per_epoch * (progress["epochs"] - progress["epoch"])


def cancel(sel: Selection) -> tuple[list[str], list[str], list[str]]:
    """Ask the selected runs to stop, through their folders: those the running launcher or their
    SLURM task has not started yet are skipped, running ones checkpoint and stop within a second or
    two; SLURM tasks left with nothing to run are cancelled with scancel. Returns the labels of the
    (queued, running) runs cancelled and the SLURM tasks cancelled; the next launch clears the
    requests."""
    from runner.backends.slurm import SlurmBackend
    from runner.launch.lock import running_launch
    from runner.records.provenance import command_line

    runs_dir = sel.study.runs_dir
    launched = set((running_launch(runs_dir) or {}).get("runs") or ())
    slurm = SlurmBackend(sel.study)
    tasks = {r.id: t for r in sel.runs if (t := slurm.handle_of(r.id))}
    answers = slurm.poll(set(tasks.values()))
    live = {j for j, said in answers.items() if said in slurm.waiting | slurm.running}
    by = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line()}
    queued, running, touched = [], [], set()
    for run in sel.runs:
        folder = RunFolder(runs_dir / run.id)
        if not folder.path.is_dir() or folder.cancel_requested():
            continue
        state = folder.read().state
        in_slurm = tasks.get(run.id) in live
        if state == State.RUNNING:
            running.append(run.label)
        elif (run.id in launched or in_slurm) and state not in (State.DONE, State.FAILED):
            queued.append(run.label)
        else:
            continue
        folder.request_cancel(by)
        if in_slurm:
            touched.add(tasks[run.id])
    idle = _tasks_left_idle(runs_dir, touched) if touched else []
    slurm.cancel(idle)
    return queued, running, idle


def _tasks_left_idle(runs_dir: Path, tasks: set[str]) -> list[str]:
    """Of these SLURM tasks, those whose every run is finished or cancelled (one pass over the folders)."""
    from runner.backends.job_file import task_of

    busy = set()
    for d in runs_dir.iterdir():
        if d.is_dir() and not d.name.startswith(".") and (task := task_of(d)) in tasks and task not in busy:
            folder = RunFolder(d)
            if not folder.cancel_requested() and folder.read().state not in (State.DONE, State.FAILED):
                busy.add(task)
    return sorted(tasks - busy)


# ---------------------------------------------------------------- show


def show(study: Study, run_id: str) -> dict[str, Any]:
    """Everything the store knows of one run (a unique prefix of its id is enough)."""
    store = store_for(study, ingest=True)
    if store is None:
        raise SelectionError(f"{run_id}: no results database yet ({study.store}); run `runner launch` first")
    ids = store.find(run_id)
    if len(ids) == 1:
        store.ingest_probes(study.runs_dir, ids)
    if not ids and (cells := store.find_cell(run_id)):  # `runner plan` shows cell ids: list the cell's runs
        return {"cell": cells[0][0] if len({c[0] for c in cells}) == 1 else run_id,
                "runs": [{"id": i, "label": label, "state": state} for _, i, label, state in cells]}
    if len(ids) != 1:
        raise SelectionError(f"{run_id}: " + ("no run with this id" if not ids else
                                              f"ambiguous, matches {', '.join(sorted(ids)[:5])}"))
    rec = store.runs(ids)[ids[0]]
    planned = expand(study).by_id().get(rec.id)  # the label the study gives it now (a rename shows)
    series = store.metrics(ids)
    last_epoch = max((m["epoch"] for m in series), default=None)
    return {"id": rec.id, "cell": rec.cell, "label": planned.label if planned else rec.label,
            "planned": planned is not None, "state": rec.state, "reason": rec.reason,
            "matrix": list(rec.matrices), "config": store.config(rec.id), "summary": rec.summary, "folder": rec.folder,
            "attempts": store.attempts(rec.id),
            "last_metrics": {m["name"]: m["value"] for m in series if m["epoch"] == last_epoch},
            "epochs_logged": last_epoch,
            "probes": [{k: p[k] for k in ("probe", "key", "kind", "state", "reason", "device", "folder", "summary")}
                       for p in store.probes(ids)]}


# ---------------------------------------------------------------- report


def report_data(sel: Selection) -> "ReportData":
    """The report's input (``analysis/data.py``): the run folders ingested, then each selected run
    with its record, its state at HEAD (stale carried down from upstreams) and its hardware."""
    from analysis.data import ReportData, RunView

    store = store_for(sel.study, ingest=True)
    ids = [r.id for r in with_upstreams(sel.runs, sel.plan.by_id())]
    records = store.runs(ids, progress=False) if store is not None else {}
    hardware = store.hardware() if store is not None and records else {}
    commit = git_commit(sel.study.dir)
    states, why = effective_states(sel.runs, records, commit, sel.plan.by_id(), current_code().hash)
    why = with_code_changes(why, records)
    views = []
    for run in sel.runs:
        rec = records.get(run.id)
        reason = why.get(run.id)
        views.append(RunView(run, states[run.id], rec.summary if rec else None,
                             rec.finished_at if rec else None, rec.git_commit if rec else None,
                             hardware.get(run.id, ()), reason))
    return ReportData(sel.study, views, commit, store)


def report(sel: Selection, command: list[str], *, tables: Iterable[str] = (), figures: Iterable[str] = (),
           with_figures: bool = True) -> "Report":
    """``runner report``'s tables of the selection (all if neither tables nor figures are named;
    figures are drawn by ``analysis.report.write``); ``command``: the selection's part of the
    command that regenerates them. Names are checked before the store is read."""
    from analysis import report as r

    chosen = r.choose(sel.study, tables, figures, with_figures=with_figures)
    data = report_data(sel)
    tunings = []
    if chosen.tunes:  # Optuna is imported only for them
        from runner.tune.results import best_by_cell

        tunings = best_by_cell(sel.study, sel.plan, data.store)
    return r.build(data, chosen, command, tunings=tunings)


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class DataTarget:
    name: str  # the study's name, or the source when given with --root
    source: str
    options: dict[str, Any]  # root made absolute


def data_targets(study: Study | None, names: Iterable[str], root: Path | None = None) -> list[DataTarget]:
    """The datasets ``runner data`` acts on: names of the study's ``[datasets.*]`` (all if none),
    or sources, meaning every study dataset of that source; with ``--root``, sources placed there."""
    import datasets

    names = list(names)
    if root is not None:
        for n in names:
            if datasets.get_source(n) is None:
                raise SelectionError(f"{n}: with --root give a source; choices: {choices(datasets.list_sources())}")
        return [DataTarget(n, n, {"root": str(root.resolve())}) for n in names]
    if study is None:
        raise SelectionError("no study file: give --root DIR, or -f FILE")
    defined = study.datasets
    out: dict[str, DataTarget] = {}
    for n in names or list(defined):
        matched = [d for d in defined.values() if d.name == n or d.source == n]
        if not matched:
            raise SelectionError(f"{n}: not a dataset of {study.file} nor the source of one; defined: "
                                 f"{choices(defined)} (or give a source with --root DIR)")
        for d in matched:
            options = dict(d.options)
            if options.get("root"):
                options["root"] = data_root(study, options["root"])
            out[d.name] = DataTarget(d.name, d.source, options)
    return list(out.values())


def data_state(target: DataTarget) -> str | None:
    import datasets

    return datasets.data_problem(target.source, **target.options)


def require_downloadable(target: DataTarget) -> None:
    import datasets

    if not datasets.get_source(target.source).downloadable:
        raise DataError(f"dataset {target.name} ({target.source}) is not downloadable by runner: "
                        f"{data_state(target) or 'its files are in place'}")


def data_download(target: DataTarget) -> None:
    import datasets
    from datasets.download import download

    require_downloadable(target)
    src = datasets.get_source(target.source)
    try:
        download(src.options(**target.options))
    except datasets.DataError as e:
        raise DataError(f"dataset {target.name}: {e}") from None


def data_verify(target: DataTarget) -> list[tuple[str, str, bool]]:
    import datasets
    from datasets.download import verify

    src = datasets.get_source(target.source)
    options = dict(target.options)
    root = options.pop("root", None)
    return verify(src.options(**target.options),
                  lambda split: datasets.build_dataset(target.source, root=root, split=split, **options))
