"""What a run folder puts in the index, read without the database: the read half of an ingest.

``rows_of`` turns one folder into its ``mr_runs`` row, its attempt rows and its series rows;
``read_batches`` reads batches of folders in forked processes while the store writes earlier
ones. Nothing here imports SQLAlchemy or touches the store: the readers may run anywhere.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from typing import Iterator

from runner.records.runfolder import RunFolder
from runner.states import State

READ_AHEAD_FROM = 3  # batches from which forked processes read folders while the store writes
MAX_READERS = 3
_NUMBER = (float, int)
_NOT_METRICS = frozenset(("attempt", "epoch", "step", "time"))  # the keys of a metrics line that say when
ATTEMPT_FIELDS = ("device", "gpu_model", "gpu_count", "gpu_mem_mb", "python", "torch", "cuda", "cudnn", "timm",
                  "git_commit", "git_dirty", "git_diff_hash", "command", "slurm_job_id", "slurm_array_task_id")


Rows = tuple[dict, "list[dict] | None", "list[tuple]"]  # mr_runs row, attempt rows, mr_series rows


def run_folders(runs_dir) -> list[tuple[str, str]]:
    """(name, path) of each run folder, as strings (see ``runfolder.still_done``)."""
    try:
        return [(e.name, e.path) for e in os.scandir(runs_dir) if e.is_dir() and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def metrics_grown_from(old_sig: str | None, sig: str) -> int | None:
    """The size ``metrics.jsonl`` had when the index last read the folder, if since then no attempt
    started or ended and the plan's copy is the same (``run.json``, ``attempts.jsonl``) and the
    metrics only grew: its new lines are all the points there are to add. None otherwise."""
    if old_sig is None:
        return None
    old, new = old_sig.split("|"), sig.split("|")
    if len(old) != len(new) or old[:2] != new[:2]:  # FILES: run.json, attempts.jsonl first
        return None
    before, now = old[2], new[2]
    if now == "-":
        return None
    size = 0 if before == "-" else int(before.split(":")[0])
    return size if int(now.split(":")[0]) >= size else None


def rows_of(folder: RunFolder, sig: str, grown: int | None = None) -> Rows | None:
    """What one run folder puts in the index: its ``mr_runs`` row, its attempt rows and its
    ``mr_series`` rows; None for a folder that is not a run's. With ``grown``
    (``metrics_grown_from``), when the lines appended since can be read alone, the attempt rows
    are None (unchanged), the series rows are those of the new lines, and the ``mr_runs`` row
    lacks the columns of run.json, which did not change either (it is not read)."""
    lines = folder.metrics_after(grown) if grown is not None else None
    fs = folder.read(sig=sig, plan=lines is None)
    if lines is None and (fs.run is None or fs.run.get("id") != folder.path.name):
        return None
    rid = folder.path.name
    attempts = fs.attempts
    last_prov = (attempts[-1].get("provenance") or {}) if attempts else {}
    done_prov = last_prov if fs.state == State.DONE else {}
    row = dict(
        id=rid, state=fs.state.value, reason=fs.reason, warnings=list(fs.warnings) or None,
        summary=fs.summary, progress=fs.heartbeat, attempts=len(attempts),
        git_commit=(done_prov.get("git") or {}).get("commit"),
        code_hash=(done_prov.get("code") or {}).get("hash"),
        started_at=attempts[0].get("started_at") if attempts else None,
        finished_at=attempts[-1].get("ended_at") if attempts and fs.state in (State.DONE, State.FAILED) else None,
        folder=str(folder.path), folder_sig=sig, ingested_at=time.time(),
    )
    series = series_rows(rid, folder.metrics() if lines is None else lines)
    row["last_step"] = max((r[-1] for r in series if r[-1] is not None), default=None)
    if lines is not None:
        return row, None, series
    row.update(cell=fs.run["cell"], label=fs.run["label"], study=fs.run.get("study"),
               matrices=list(fs.run.get("matrices", [])), config=fs.run["config"])
    return row, [attempt_row(rid, a, fs) for a in attempts], series


def series_rows(rid: str, lines: list[dict]) -> list[tuple]:
    """The ``mr_series`` rows of metrics lines: per metric, its first step, its steps, epochs,
    values and times as JSON arrays in the lines' order, and its last step (a tenth of the rows
    one per value made: their insert was most of a sync). A value that is NaN or infinite stays
    so, as JSON's extension spells it. The metrics in every line (all, nearly always) share the
    run's steps, epochs and times, and all their arrays are encoded by one call."""
    whens = [(_number(m.get("step"), m["epoch"]), m["epoch"], _number(m.get("time"), None)) for m in lines]
    full, out = [], []
    for name in dict.fromkeys(k for m in lines for k in m if k not in _NOT_METRICS):
        values = [m.get(name) for m in lines]
        if all(type(v) in _NUMBER for v in values):  # a bool is not a metric
            full.append((name, values))
        elif kept := [(*w, v) for w, v in zip(whens, values) if type(v) in _NUMBER]:
            steps, epochs, times, values = zip(*kept)
            out.append((rid, name, steps[0], *map(json.dumps, (steps, epochs, values, times)), _last(steps)))
    if full:
        steps = [w[0] for w in whens]
        texts, last = _json_arrays([steps, [w[1] for w in whens], [w[2] for w in whens], *(v for _, v in full)]), _last(steps)
        out += [(rid, name, steps[0], texts[0], texts[1], text, texts[2], last) for (name, _), text in zip(full, texts[3:])]
    return out


def _number(value, otherwise):
    """A line's step or time when it is a number (a step is a key of ``mr_series``; a time not a
    number is not one): what ``_json_arrays`` may split."""
    return value if type(value) in _NUMBER else otherwise


def _json_arrays(columns: list[list]) -> list[str]:
    """Each column (of numbers and None) as a JSON array, from one call of json's encoder rather
    than one a column: no number, null, NaN or Infinity holds a bracket, so the arrays of the
    list of them are where it splits at '], ['."""
    return [f"[{part}]" for part in json.dumps(columns)[2:-2].split("], [")]


def _last(steps) -> int | None:
    return max((s for s in steps if s is not None), default=None)


def dumps(obj) -> str:
    """JSON with NaN and infinities as Python's json writes them (its default encoder, reused)."""
    return json.dumps(obj)


def attempt_row(rid: str, a: dict, fs) -> dict:
    prov = a.get("provenance") or {}
    flat = {**(prov.get("host") or {}), **(prov.get("torch") or {}), **{f"git_{k}": v for k, v in (prov.get("git") or {}).items()},
            "command": prov.get("command"), **(prov.get("slurm") or {})}
    row = {k: flat.get(k) for k in ATTEMPT_FIELDS}
    tb = fs.error.get("traceback") if fs.error and fs.error.get("attempt") == a["attempt"] else None
    return dict(run_id=rid, number=a["attempt"], host=a.get("host"), pid=a.get("pid"), started_at=a.get("started_at"),
                ended_at=a.get("ended_at"), status=a.get("status"), reason=a.get("reason"), traceback=tb,
                provenance={**prov, "engine": a["engine"]} if a.get("engine") else prov, **row)


def read_batch(batch: list[tuple[RunFolder, str, int | None]]) -> list[Rows]:
    return [r for f, sig, grown in batch if (r := rows_of(f, sig, grown)) is not None]


def read_batches(batches: list[list[tuple[RunFolder, str, int | None]]]) -> Iterator[list[Rows]]:
    """Each batch's rows, in order. With ``READ_AHEAD_FROM`` batches or more and two cores or
    more, forked processes (one a core, up to ``MAX_READERS``) read the next batches while this
    one writes the current one: reading the files is most of a sync, writing a batch's few rows
    a wait between reads. At most two batches per reader wait, so memory stays a few batches
    whatever the study's size. The readers never touch the database."""
    import multiprocessing

    cores = len(os.sched_getaffinity(0))
    readers = min(cores, MAX_READERS) if cores > 1 else 0
    if len(batches) < READ_AHEAD_FROM or readers < 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(read_batch, batches)
        return
    pool = multiprocessing.get_context("fork").Pool(readers)
    try:
        waiting = deque(pool.apply_async(read_batch, (b,)) for b in batches[:2 * readers])
        for b in batches[2 * readers:] + [None] * len(waiting):
            rows = waiting.popleft().get()
            if b is not None:
                waiting.append(pool.apply_async(read_batch, (b,)))
            yield rows
    finally:
        pool.terminate()
        pool.join()
