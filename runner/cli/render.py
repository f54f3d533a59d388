"""Terminal rendering with rich: plan and status tables, one run, and the live launch display."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from runner.commands import eta_seconds
from runner.states import FINISHED, TROUBLE, State

STATE_STYLE = {State.DONE: "green", State.STALE: "yellow", State.RUNNING: "cyan", State.QUEUED: "cyan",
               State.FAILED: "red", State.LOST: "magenta", State.CANCELLED: "magenta", State.PRUNED: "dim",
               State.UNKNOWN: "yellow", State.CORRUPT: "red", State.INTERRUPTED: "magenta", State.BLOCKED: "red",
               State.MISSING: "dim"}
MAX_ROWS = 40

console = Console(highlight=False, soft_wrap=True)  # long lines stay whole in logs
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


_encode = json.JSONEncoder(default=str).encode  # no indent: json's C encoder (with one, its Python one)


def print_json(obj: Any) -> None:
    """``obj`` as JSON, each element of a top-level list (a run, in ``status --json``) on a line of
    its own: readable, greppable, and written by json's C encoder (an indented dump of 10,000
    runs and their configs took two thirds of a second in its Python one)."""
    if not isinstance(obj, dict):
        sys.stdout.write(_encode(obj) + "\n")
        return
    parts = []
    for k, v in obj.items():
        if isinstance(v, list) and v:
            parts.append(f"{_encode(k)}: [\n  " + ",\n  ".join(map(_encode, v)) + "\n ]")
        else:
            parts.append(f"{_encode(k)}: {_encode(v)}")
    sys.stdout.write("{\n " + ",\n ".join(parts) + "\n}\n")


def _counts_line(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"[{STATE_STYLE.get(s, 'bold')}]{n} {s}[/]" for s, n in counts.items()]
    return f"{total} run(s): " + ", ".join(parts) if parts else "0 runs selected"


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return "—" if v is None else str(v)


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def plan_view(study_name: str, entries: list[dict]) -> None:
    """Runs grouped by cell (the seeds of one configuration), with their states."""
    cells: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        cells[e["cell"]].append(e)
    table = Table(title=f"plan of {escape(study_name)}", title_justify="left")
    table.add_column("cell", overflow="fold", ratio=3)
    table.add_column("cell id", style="dim", no_wrap=True)  # `runner show CELL_ID` lists its runs
    for col in ("matrix", "seeds", "states"):
        table.add_column(col, overflow="fold")
    for i, (cell, runs) in enumerate(cells.items()):
        if i == MAX_ROWS:
            table.add_row(f"… {len(cells) - MAX_ROWS} more cells (narrow with --where or --matrix, or use --json)",
                          "", "", "", "")
            break
        label = runs[0]["label"].rsplit("/", 1)[0]
        states: dict[str, int] = defaultdict(int)
        for r in runs:
            states[r["state"]] += 1
        table.add_row(escape(label), cell, ",".join(runs[0]["matrix"]),
                      ",".join(r["label"].rsplit("/s", 1)[-1] for r in runs),
                      ", ".join(f"[{STATE_STYLE.get(s, 'bold')}]{n} {s}[/]" for s, n in states.items()))
    console.print(table)


def _compact_table(title: str) -> Table:
    """A table that gives its width to the columns: a rule under the header only, two spaces between
    columns, so that `runner status` reads in an 80-column terminal."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 padding=(0, 1, 0, 0))


def _runs_table(title: str, *columns: str, last_wraps: bool = False) -> Table:
    """A compact table of runs: the label first (folded onto a second line if it must, never cut),
    the run id next (never broken: it is what `runner show` takes), then the other columns.
    ``last_wraps``: the last column (a reason) wraps inside the table's width instead of widening it."""
    t = _compact_table(title)
    t.add_column("label", overflow="fold", ratio=1 if last_wraps else None)
    t.add_column("run", style="dim", no_wrap=True)
    for i, col in enumerate(columns, 1):
        wraps = last_wraps and i == len(columns)
        t.add_column(col, overflow="fold", ratio=2 if wraps else None, no_wrap=not wraps)
    return t


def _more_row(t: Table, n: int) -> None:
    t.add_row(f"… {n} more (use --json)", *[""] * (len(t.columns) - 1))


def status_view(study_name: str, overview: dict) -> None:
    console.print(f"[bold]{escape(study_name)}[/]: " + _counts_line(overview["counts"]))
    running = [e for e in overview["runs"] if e["state"] == State.RUNNING]
    if running:
        t = _runs_table("running", "epoch", "ETA", "val_acc", "train_loss")
        for e in running:
            p = e.get("progress") or {}
            m = p.get("metrics") or {}
            t.add_row(escape(e["label"]), e["id"], f"{p.get('epoch', 0)}/{p.get('epochs', '?')}",
                      _duration(eta_seconds(p)), _fmt(m.get("val_acc")), _fmt(m.get("train_loss")))
        console.print(t)
    in_slurm = [e for e in overview["runs"] if e.get("job") and e["state"] in (State.QUEUED, State.RUNNING)]
    if in_slurm:
        t = _runs_table("in SLURM", "state", "task", "SLURM state")
        for e in in_slurm[:MAX_ROWS]:
            t.add_row(escape(e["label"]), e["id"], e["state"], e["job"]["id"], e["job"]["state"] or "?")
        if len(in_slurm) > MAX_ROWS:
            _more_row(t, len(in_slurm) - MAX_ROWS)
        console.print(t)
    failed = [e for e in overview["runs"] if e["state"] in TROUBLE]
    if failed:
        t = _runs_table("failed, lost, cancelled, unknown or corrupt", "state", "reason", last_wraps=True)
        for e in failed[:MAX_ROWS]:
            job = f" [dim](task {e['job']['id']})[/]" if e.get("job") else ""
            t.add_row(escape(e["label"]), e["id"], e["state"], escape(e.get("reason") or "—") + job)
        console.print(t)
    done = [e for e in overview["runs"] if e["state"] in FINISHED]
    if done:
        t = _runs_table("done", "test_acc", "best_val_acc", "params", "train time")
        for e in done[:MAX_ROWS]:
            s = e.get("summary") or {}
            t.add_row(escape(e["label"]) + (" [yellow](stale)[/]" if e["state"] == State.STALE else ""), e["id"],
                      _fmt(s.get("test_acc")), _fmt(s.get("best_val_acc")), _fmt(s.get("params")),
                      _duration(s.get("train_time_s")))
        if len(done) > MAX_ROWS:
            _more_row(t, len(done) - MAX_ROWS)
        console.print(t)
    warned = [e for e in overview["runs"] if e.get("warnings")]
    for e in warned[:MAX_ROWS]:  # what a run lost on the way: said, never silently absorbed
        for w in e["warnings"]:
            err_console.print(f"[yellow]warning[/] {escape(e['label'])} {e['id']}: {escape(w)}", soft_wrap=True)
    tuning_view(overview.get("tuning") or [])


def tune_line(result, metric: str, file: str, name: str) -> str:
    """What ``runner tune`` says when it stops: this run's trials, and the best of the study."""
    extra = ([f"{result.resumed} resumed"] if result.resumed else []) + (
        [f"{result.reused} reused a trained run"] if result.reused else [])
    line = (f"{result.name}: {result.complete} complete, {result.pruned} pruned, {result.failed} failed in this run"
            + (f" ({', '.join(extra)})" if extra else ""))
    b = result.best
    if b:
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
        line += (f"; best: trial {b['number']}, {metric} = {_fmt(b['value'])} ({values}); "
                 f"write it into {file} with `runner tune {name} --apply`")
    return line


def tuning_view(studies: list[dict]) -> None:
    """The [tune.NAME] studies: trials by state and the best so far."""
    if not studies:
        return
    t = _compact_table("tuning")
    t.add_column("block", overflow="fold")
    for col in ("finished", "complete", "pruned", "failed", "running"):
        t.add_column(col, no_wrap=True)
    t.add_column("best", overflow="fold", ratio=1)
    for e in studies:
        b = e.get("best")
        best = (f"trial {b['trial']}: {e['metric']} = {_fmt(b['value'])} ("
                + ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items()) + ")"
                if b else "—")
        t.add_row(escape(e["name"]), f"{e['complete'] + e['pruned']}/{e['trials']}", str(e["complete"]),
                  str(e["pruned"]), str(e["failed"]), str(e["running"]), escape(best))
    console.print(t)


def show_view(info: dict) -> None:
    if "runs" in info:  # a cell id: its runs, each one `runner show RUN_ID`
        console.print(f"cell {info['cell']}: {len(info['runs'])} run(s); `runner show RUN_ID` shows one")
        for r in info["runs"]:
            console.print(f"  {r['id']}  {escape(r['label'])}  [{STATE_STYLE.get(r['state'], 'bold')}]{r['state']}[/]")
        return
    console.print(f"[bold]{escape(info['label'])}[/]  id {info['id']}  cell {info['cell']}  "
                  + ("" if info.get("planned", True) else "[dim](no longer planned by the study)[/]  ")
                  + f"[{STATE_STYLE.get(info['state'], 'bold')}]{info['state']}[/]"
                  + (f": {escape(info['reason'])}" if info["reason"] else ""))
    console.print(f"folder {escape(info['folder'])}")
    console.print("config " + escape(json.dumps(info["config"], sort_keys=True)))
    for a in info["attempts"]:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["started_at"])) if a["started_at"] else "?"
        console.print(f"attempt {a['number']}: {a.get('status') or 'open'} on {a.get('host')} ({a.get('device')}, "
                      f"{a.get('gpu_model') or 'no GPU'}), started {started}, git {str(a.get('git_commit'))[:10]}"
                      f"{' dirty' if a.get('git_dirty') else ''}, torch {a.get('torch')}"
                      + (f", SLURM job {a['slurm_job_id']}" + (f"_{a['slurm_array_task_id']}" if a.get("slurm_array_task_id") else "")
                         if a.get("slurm_job_id") else "") + f"; command: {escape(str(a.get('command')))}")
        engine = (a.get("provenance") or {}).get("engine")
        if engine:
            resumed = engine.get("resumed_from")
            console.print(f"  engine: {engine.get('precision')}, compile {'on' if engine.get('compile') else 'off'}, "
                          f"channels_last {'on' if engine.get('channels_last') else 'off'}, "
                          f"fused optimizer {'on' if engine.get('fused') else 'off'}, {engine.get('data_path')} data"
                          + (f"; resumed at epoch {resumed['epoch']} batch {resumed['batch']} (step {resumed['step']})"
                             if resumed else ""))
    if info["summary"]:
        console.print("summary " + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(info["summary"].items())))
    if info["last_metrics"]:
        console.print(f"epoch {info['epochs_logged']}: " +
                      ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(info["last_metrics"].items())))
    for p in info.get("probes", ()):
        console.print(escape(f"probe {p['probe']} ({p['kind']}, settings {p['key']}): {p['state']}")
                      + escape(f": {p['reason']}" if p["reason"] else f" on {p['device']}") + f"; {escape(p['folder'])}",
                      soft_wrap=True)


class LaunchDisplay:
    """Live progress on a terminal; one line per finished run elsewhere (logs, CI). ``metric``: the
    number each finished line shows (a tuning trial shows its objective, never a test metric)."""

    def __init__(self, total: int, already_done: int = 0, metric: str = "test_acc"):
        self.total, self.already_done, self.finished_n, self.metric = total, already_done, 0, metric
        self.slots: dict[str, tuple[Any, str]] = {}  # slot name -> (run, slot)
        self.records: dict = {}
        self.start = time.monotonic()
        self.live = Live(self._render(), console=console, refresh_per_second=2, transient=False) \
            if console.is_terminal else None

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def _render(self) -> Table:
        t = Table(title=f"{self.finished_n}/{self.total} finished, elapsed {_duration(time.monotonic() - self.start)}",
                  title_justify="left")
        for col in ("slot", "run", "epoch", "val_acc", "ETA"):
            t.add_column(col)
        for slot, (run, _) in sorted(self.slots.items()):
            rec = self.records.get(run.id)
            p = (rec.progress if rec else None) or {}
            m = p.get("metrics") or {}
            t.add_row(slot, escape(run.label), f"{p.get('epoch', 0)}/{p.get('epochs', run.config['train']['epochs'])}",
                      _fmt(m.get("val_acc")), _duration(eta_seconds(p)))
        return t

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self._render())

    def started(self, run, slot) -> None:
        self.slots[slot.name] = (run, slot.name)
        if not self.live:
            console.print(f"start  {escape(run.label)} [dim]{run.id}[/] on {slot.name}")
        self._refresh()

    def finished(self, run, state, record, reason) -> None:
        self.finished_n += 1
        for name, (r, _) in list(self.slots.items()):
            if r.id == run.id:
                del self.slots[name]
        s = (record.summary if record else None) or {}
        detail = (f"{self.metric}={_fmt(s.get(self.metric))} in {_duration(s.get('train_time_s'))}" if state == State.DONE
                  else (reason or ""))
        console.print(f"[{STATE_STYLE.get(state, 'bold')}]{state:<9}[/] {escape(run.label)} [dim]{run.id}[/] {escape(detail)}")
        for w in getattr(record, "warnings", ()):
            self.message(f"warning {run.label} {run.id}: {w}")
        self._refresh()

    def progress(self, records: dict) -> None:
        self.records.update(records)
        self._refresh()

    def message(self, text: str) -> None:
        err_console.print(text, markup=False)  # plain text: reasons quote tracebacks, paths, "[...]"


def data_view(rows: list[dict]) -> None:
    """A short table of states; what is missing and how to get it follows, one line per dataset."""
    table = Table(title="datasets", title_justify="left")
    for col in ("dataset", "source", "root", "state"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["dataset"], r["source"], escape(_relative(r["root"]) or "(bundled)"),
                      "[green]in place[/]" if r["problem"] is None else "[red]missing[/]")
    console.print(table)
    for r in rows:
        if r["problem"] is not None:
            console.print(f"{r['dataset']}: " + escape(r["problem"]), soft_wrap=True, highlight=False)


def _relative(path: str | None) -> str | None:
    if not path:
        return path
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def probe_started(probe, tasks: int, workers: int) -> None:
    print(f"probe {probe.name} ({probe.kind}): {tasks} run(s) on {workers} worker(s)", flush=True)


def probe_landed(task: dict, state: str, reason: str | None) -> None:
    print(f"  {state:6} {task['label']}" + (f": {reason}" if reason else ""), flush=True)


def probe_line(r) -> str:
    """The closing line of one [[probe]] block of `runner probe`."""
    parts = [f"{len(r.done)} probed", f"{r.kept} already had it"]
    if r.failed:
        parts.append(f"{len(r.failed)} failed")
    if r.skipped:
        reasons = sorted({why for _, why in r.skipped})
        parts.append(f"{len(r.skipped)} skipped ({'; '.join(reasons[:3])}" + ("; ..." if len(reasons) > 3 else "") + ")")
    if r.unfinished:
        parts.append(f"{r.unfinished} not finished yet")
    where = f"; results in <run folder>/{r.probe.folder}/, `runner report --table probe_{r.probe.name}`"
    return f"probe {r.probe.name}: " + ", ".join(parts) + (where if r.done or r.kept else "")


def submit_lines(result) -> None:
    """What `runner launch --backend slurm` says once the array is submitted."""
    waiting = (f"; {result.in_slurm} left to their earlier SLURM task(s)" if result.in_slurm else "")
    if result.unknown:
        err_console.print(f"{result.unknown} run(s) belong to SLURM tasks that squeue and sacct know nothing of; they "
                          "are not submitted again while they may still run (`runner status` shows them as unknown; "
                          "`runner cancel` them to submit them again)")
    if not result.submitted:
        console.print(f"nothing to submit: {result.already_done} of {result.selected} selected run(s) already done"
                      f"{stale_hint(result.stale, result.corrupt)}{waiting}")
        return
    arrays = sorted({j.split("_")[0] for j in result.job_ids})
    console.print(f"submitted {result.submitted} run(s) as {len(result.job_ids)} array task(s) of job(s) {', '.join(arrays)} "
                  f"({result.already_done} were already done{waiting}); follow them with `runner status`")


def stale_hint(stale: int, corrupt: int = 0) -> str:
    """What a launch says of the stale and corrupt runs it left alone: how to train them again."""
    return ((f", {stale} stale (trained with other code; `runner plan` says what changed, "
             "`--rerun stale` trains them again)") if stale else "") + (
        (f", {corrupt} corrupt (a results file cannot be parsed; `runner status` names it, "
         "`--rerun corrupt` sets it aside and trains them again)") if corrupt else "")


def launch_lines(result) -> None:
    """``runner launch``'s closing lines: what ran and how it ended, then each failure's reason."""
    ran = result.done + result.failed + result.lost + result.cancelled + result.blocked
    if ran == 0 and not result.interrupted:
        rest = result.selected - result.already_done - result.stale - result.corrupt
        console.print(f"nothing to run: {result.already_done} of {result.selected} selected run(s) already done"
                      + stale_hint(result.stale, result.corrupt) + (f", {rest} failed (`--rerun failed` runs them again)" if rest > 0 else ""))
    else:
        console.print(f"{result.done} done, {result.failed} failed, {result.lost} lost, {result.cancelled} cancelled "
                      f"or interrupted" + (f", {result.blocked} blocked" if result.blocked else "")
                      + f" ({result.already_done} were already done" + stale_hint(result.stale, result.corrupt)
                      + (f"; {result.retried} retried after a lost worker" if result.retried else "") + ")")
    for label, state, reason in result.failures:
        err_console.print(f"[red]{state}[/] {escape(label)}: {escape(reason)}", soft_wrap=True)
    if getattr(result, "stopped_for", None):
        err_console.print(f"[red]stopped[/]: {escape(result.stopped_for)}", soft_wrap=True)
