"""``runner probe NAME``: a ``[[probe]]`` block run on the finished runs it matches.

Which runs: the selection's runs that the block's ``match`` keeps and that are done (at any
commit). A run whose folder already holds this probe's result for the same settings is not
probed again (``--force`` does). A kind that reads attention leaves out architectures known to
have no attention, and a kind's own check refuses what it can before any worker starts
(runner/probes/kinds/). The rest become tasks for probe workers (``python -m runner.probes.worker``,
one per slot, each run's tasks on one worker); the workers write the results into the run
folders, and this process, the only writer of the database, ingests them. Torch-free.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import architectures

from runner.errors import SpecError
from runner.plan.runs import Run
from runner.probes.kinds import get_kind
from runner.study.probes import Probe
from runner.study.selectors import axes_of, matches
from runner.records.provenance import COMMAND_ENV, command_line
from runner.records.runfolder import read_json

POLL_S = 0.3


@dataclass
class ProbeResult:
    probe: Probe
    done: list[tuple[str, float]] = field(default_factory=list)  # (label, seconds)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, reason)
    kept: int = 0  # runs that already had this result
    unfinished: int = 0  # matched runs not done yet
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label, why)
    interrupted: bool = False
    folders: list[Path] = field(default_factory=list)  # result folders written


def _check(study, probe: Probe, tasks: list[dict]) -> None:
    """The kind's own refusals (one line naming the file, the key and the fix), if it has any."""
    check = get_kind(probe.kind).check
    if check is not None:
        check(study, probe, tasks)


def result_folder(study, run: Run, probe: Probe) -> Path:
    return study.runs_dir / run.id / probe.folder


def tasks_for(study, runs: list[Run], states: dict[str, str], probe: Probe, *,
              force: bool = False) -> tuple[list[dict], ProbeResult]:
    """The tasks still to do, and the runs left out (kept, unfinished, skipped) in a result."""
    result = ProbeResult(probe)
    tasks = []
    for run in runs:
        if probe.match and not matches(axes_of(run), run.config, probe.match):
            continue
        if states.get(run.id) != "done":
            result.unfinished += 1
            continue
        family = architectures.get_family(run.config["architecture"]["model"])
        if probe.attention_only and family is not None and family.attention is False:
            result.skipped.append((run.label, f"{family.name} has no attention layer"))
            continue
        out = result_folder(study, run, probe)
        if not force and (out / "result.json").exists():
            result.kept += 1
            continue
        tasks.append({"run_folder": str(study.runs_dir / run.id), "label": run.label, "name": probe.name,
                      "kind": probe.kind, "key": probe.key, "settings": probe.settings, "out": str(out)})
    return tasks, result


def run_tasks(study, tasks: list[dict], slots, result: ProbeResult,
              on_result: Callable[[dict, str, str | None], None] = lambda *a: None) -> ProbeResult:
    """Run the tasks on one worker per slot; ``on_result(task, state, reason)`` as each lands."""
    if not tasks:
        return result
    by_run: dict[str, list[dict]] = {}
    for t in tasks:
        by_run.setdefault(t["run_folder"], []).append(t)
    shares: list[list[dict]] = [[] for _ in slots]
    for i, group in enumerate(by_run.values()):
        shares[i % len(slots)].extend(group)
    work_dir = study.runs_dir / ".probe-workers"
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    procs = [_start(study, slot, share, work_dir, n) for n, (slot, share) in enumerate(zip(slots, shares)) if share]
    pending = {t["out"]: t for t in tasks}
    try:
        while pending:
            for out, t in list(pending.items()):
                state = _landed(Path(out), started)
                if state is not None:
                    del pending[out]
                    _record(result, t, *state, on_result)
            alive = [p for p, _, _ in procs if p.poll() is None]
            if not alive:
                for p, share, log in procs:
                    for t in share:
                        if t["out"] in pending:
                            state = _landed(Path(t["out"]), started)
                            reason = None if state else (f"the probe worker exited with code {p.returncode} before "
                                                         f"it got there; see {log}: {_last_line(log)}")
                            del pending[t["out"]]
                            _record(result, t, *(state or ("failed", reason)), on_result)
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        result.interrupted = True
        for p, _, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _, _ in procs:
            p.wait()
    for n in range(len(slots)):
        (work_dir / f"tasks-{os.getpid()}-{n}.json").unlink(missing_ok=True)
    return result


def _record(result: ProbeResult, task: dict, state: str, reason: str | None, on_result) -> None:
    if state == "done":
        data = read_json(Path(task["out"]) / "result.json") or {}
        result.done.append((task["label"], data.get("seconds") or 0.0))
        result.folders.append(Path(task["out"]))
    else:
        result.failed.append((task["label"], reason or "failed"))
    on_result(task, state, reason)


def _landed(out: Path, since: float) -> tuple[str, str | None] | None:
    """("done", None) or ("failed", reason) once the worker wrote this task's mark, after ``since``."""
    for name, state in (("result.json", "done"), ("error.json", "failed")):
        data = read_json(out / name)
        if data is not None and data.get("time", 0) >= since:
            return state, data.get("reason")
    return None


def _start(study, slot, share: list[dict], work_dir: Path, n: int):
    tasks_file = work_dir / f"tasks-{os.getpid()}-{n}.json"
    tasks_file.write_text(json.dumps(share))
    log = work_dir / f"worker-{os.getpid()}-{n}.log"
    env = dict(os.environ, **{COMMAND_ENV: command_line(), "PYTHONUNBUFFERED": "1"})
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner.probes.worker", "--tasks", str(tasks_file), "--study-dir", str(study.dir),
             "--device", slot.device] + (["--threads", str(slot.threads)] if slot.threads else []),
            stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, share, log


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"


def run_blocks(sel, names, *, gpus: str | None, workers: int, threads: int | None, force: bool,
               on_start=lambda probe, tasks, workers: None, on_result=lambda task, state, reason: None,
               on_block=lambda result: None) -> list[ProbeResult]:
    """``runner probe NAME...``: every named block (all if none) on the selection, one after another;
    the store ingests each block's results as it ends. Stops after an interrupted block."""
    from dataclasses import replace

    from runner.backends.local import make_slots
    from runner.commands import store_for
    from runner.errors import choices

    study = sel.study
    declared = {p.name: p for p in study.probes}
    for n in names:
        if n not in declared:
            raise SpecError(study.file, f"[[probe]] {n}", f"no such block; defined: {choices(declared)}")
    chosen = [declared[n] for n in names] if names else list(declared.values())
    if not chosen:
        raise SpecError(study.file, "[[probe]]", "no [[probe]] block declared; add one with name and kind")
    for p in chosen:
        _check(study, p, [])  # the block alone (a shape_bias folder), before anything else
    slots = make_slots(gpus=gpus, per_gpu=1, workers=workers)
    if threads is not None:
        slots = [replace(s, threads=threads) for s in slots]
    store = store_for(study, ingest=True)
    records = store.runs([r.id for r in sel.runs], details=False) if store is not None else {}
    states = {i: r.state for i, r in records.items()}
    results = []
    for p in chosen:
        tasks, result = tasks_for(study, sel.runs, states, p, force=force)
        _check(study, p, tasks)
        if tasks:
            on_start(p, len(tasks), min(len(slots), len({t["run_folder"] for t in tasks})))
        run_tasks(study, tasks, slots, result, on_result)
        if store is not None:
            store.ingest_probes(study.runs_dir, [Path(t["run_folder"]).name for t in tasks])
        on_block(result)
        results.append(result)
        if result.interrupted:
            break
    return results
