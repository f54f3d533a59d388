"""The ``runner`` command line: parse options, call ``runner.commands``, render.

Imports stay inside the commands so that ``runner --help``, ``plan``, ``status``,
``report``, ``show`` and shell completion never load torch, timm or wandb. User mistakes
(``RunnerError``) print one line on stderr and exit 2; ``RUNNER_DEBUG=1`` adds
the traceback. The options several commands share live in ``runner/cli/options.py``.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from runner.cli.completion import complete_figure, complete_probe, complete_table, complete_tune, words
from runner.cli.options import (DEFAULT_FILE, Command, FileOpt, GpusOpt, JsonOpt, MatrixOpt, PerGpuOpt, WhereOpt,
                                WorkersOpt)
from runner.errors import RunnerError
from runner.states import RERUNNABLE, State

# what the code raises: typer.Exit(1) and (130) in the commands, RunnerError.exit_code, click's usage errors (2)
EXIT_CODES = """\b
Exit codes:
  0    all good
  1    some runs failed, were lost or blocked (launch, status, probe), a tuning
       stopped on failed trials, report --check found a cell missing or stale,
       data verify found a bad file
  2    bad input: the study file, an option or a selection (one line on stderr;
       RUNNER_DEBUG=1 adds the traceback)
  130  interrupted (Ctrl-C): what finished is kept; the next launch resumes"""
BACKEND = words("local", "slurm")

app = typer.Typer(
    help="Run a whole architecture × dataset × seed study from experiments.toml; get the paper's tables back.",
    epilog=EXIT_CODES, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(ctx: typer.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import platform
    from importlib.metadata import version

    print(f"runner {version('matrix-runner')} (Python {platform.python_version()})")  # the distribution's name
    raise typer.Exit()


# Commands that read (or index) and exit. They run with Python's cyclic garbage collector off
# (``main``): each collection walks every object still alive, and the 10,000 records and entries
# of a status made that a sixth of it (of a sync, a sixth too). Reference counting frees all
# else; the exit, the cycles. The commands that live long (launch, tune, `status --watch`) turn
# it back on, and so does drawing figures (analysis/figures.py: matplotlib's are cycles).
READ_AND_EXIT = {"plan", "status", "show", "report", "sync"}


@app.callback()
def _root(ctx: typer.Context, version: Annotated[bool, typer.Option(
        "--version", is_eager=True, expose_value=False, callback=_print_version,
        help="Print the version of runner and of Python, and exit.")] = False) -> None:
    """The options of ``runner`` itself, before a command."""
    if ctx.invoked_subcommand not in READ_AND_EXIT:
        gc.enable()


@app.command(cls=Command)
def plan(file: FileOpt = DEFAULT_FILE, matrix: MatrixOpt = None, where: WhereOpt = None, json_: JsonOpt = False,
         sync: Annotated[bool, typer.Option("--sync", help="Ingest the run folders into the store first.")] = False,
         explain: Annotated[bool, typer.Option(
             "--explain", help="For each missing run that was done under another config, the keys that changed.")] = False,
         orphans: Annotated[bool, typer.Option(
             "--orphans", help="List the done runs the study no longer plans (nothing is deleted).")] = False):
    """Validate and expand the study; show each cell and its state in the store (writes nothing without --sync)."""
    from runner import commands as c

    sel = c.load(file, matrix or (), where or ())
    store = c.store_for(sel.study, ingest=sync)
    entries = c.run_entries(sel, c.records_in(sel, store, details=json_), with_config=json_)
    gone = c.orphans(sel, store)
    if json_ or explain:
        c.explain(sel, entries, store, gone)
    view = c.overview(entries) | {"missing_data": c.data_warnings(sel, entries)}
    view["orphans"] = [{"id": r.id, "label": r.label, "matrix": list(r.matrices), "finished_at": r.finished_at}
                       for r in gone]
    if json_:
        from runner.cli.render import print_json

        return print_json(view)
    from rich.markup import escape

    from runner.cli.render import _counts_line, console, err_console, plan_view
    from runner.plan.stages import stage_lines

    plan_view(sel.study.name, entries)
    console.print(_counts_line(view["counts"]))
    stale = [e for e in entries if e["state"] == State.STALE]
    for e in stale[:10]:  # what changed since they trained: `--rerun stale` trains them again
        console.print(f"[yellow]stale[/] {escape(e['label'])}: {escape(e['reason'] or '')}", soft_wrap=True)
    if len(stale) > 10:
        console.print(f"… and {len(stale) - 10} more stale run(s) (`runner plan --json` lists them)")
    for e in entries if explain else ():
        if e.get("changed_from"):
            console.print(f"{escape(e['label'])}: {escape('; '.join(e['changed_from']['changes']))} "
                          f"[dim](was {e['changed_from']['run']})[/]", soft_wrap=True)
    if gone and orphans:
        for r in gone:
            console.print(f"[dim]orphan[/] {escape(r.label)} {r.id} [dim]({', '.join(r.matrices)})[/]")
    elif gone:
        console.print(f"{len(gone)} done run(s) in the store the study no longer plans (an edit or a rename; kept): "
                      "`runner plan --orphans` lists them" + (", `--explain` says what changed" if not explain else ""))
    for line in stage_lines(sel.runs, sel.plan.by_id()):  # upstreams train first
        console.print(escape(line))
    for m in view["missing_data"]:
        err_console.print(f"[yellow]warning[/]: dataset {m['dataset']} is missing for {m['runs']} run(s): "
                          + escape(m["problem"]), soft_wrap=True)


@app.command(cls=Command)
def launch(
    file: FileOpt = DEFAULT_FILE, matrix: MatrixOpt = None, where: WhereOpt = None,
    gpus: GpusOpt = None, per_gpu: PerGpuOpt = 1, workers: WorkersOpt = None,
    rerun: Annotated[Optional[list[str]], typer.Option(
        "--rerun", metavar="STATE", autocompletion=words(*sorted(RERUNNABLE)),
        help="Also run again: failed, stale (trained with other code than now), corrupt (a results file cannot be parsed; it is set aside). Repeatable.")] = None,
    retries: Annotated[int, typer.Option(
        "--retries", min=0, metavar="N",
        help="Attempts a run gets again when its worker dies or hangs (it resumes from its checkpoint).")] = 2,
    isolate: Annotated[bool, typer.Option(
        "--isolate", help="A fresh worker process for every run (default: workers take run after run).")] = False,
    backend: Annotated[str, typer.Option("--backend", metavar="local|slurm", autocompletion=BACKEND,
                                         help="local (this machine) or slurm (a job array).")] = "local",
    per_task: Annotated[Optional[int], typer.Option(
        "--per-task", metavar="N", help="slurm: runs per array task.")] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", metavar="NAME", help="slurm: partition.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", metavar="NAME", help="slurm: account.")] = None,
    qos: Annotated[Optional[str], typer.Option("--qos", metavar="NAME", help="slurm: QOS.")] = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time", metavar="TIME", help="slurm: time limit per task (90, 1:30:00, 2-00:00:00).")] = None,
    gpus_per_task: Annotated[Optional[int], typer.Option(
        "--gpus-per-task", metavar="N", help="slurm: GPUs per task (--gres=gpu:N).")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(
        "--cpus-per-task", metavar="N", help="slurm: CPUs per task.")] = None,
    mem: Annotated[Optional[str], typer.Option("--mem", metavar="SIZE", help="slurm: memory per task (16G).")] = None,
    array_parallelism: Annotated[Optional[int], typer.Option(
        "--array-parallelism", metavar="K", help="slurm: at most K tasks at once.")] = None,
    constraint: Annotated[Optional[str], typer.Option(
        "--constraint", metavar="FEATURES", help="slurm: node features.")] = None,
):
    """Run every selected cell that is not done yet: on local workers (Ctrl-C stops cleanly), or as a
    SLURM job array (--backend slurm; options from [slurm] of the study file, flags override them)."""
    from runner import commands as c
    from runner.errors import SelectionError

    bad = set(rerun or ()) - RERUNNABLE
    if bad:
        raise SelectionError(f"--rerun {', '.join(sorted(bad))}: choose among {', '.join(sorted(RERUNNABLE))}")
    if backend not in ("local", "slurm"):
        raise SelectionError(f"--backend {backend}: choose local or slurm")
    slurm_flags = {"per_task": per_task, "partition": partition, "account": account, "qos": qos, "time": time_limit,
                   "gpus_per_task": gpus_per_task, "cpus_per_task": cpus_per_task, "mem": mem,
                   "array_parallelism": array_parallelism, "constraint": constraint}
    slurm_flags = {k: v for k, v in slurm_flags.items() if v is not None}
    local_flags = {"--gpus": gpus, "--per-gpu": per_gpu != 1 or None, "--workers": workers, "--isolate": isolate or None}
    if backend == "slurm" and any(v is not None for v in local_flags.values()):
        used = [k for k, v in local_flags.items() if v is not None]
        raise SelectionError(f"{', '.join(used)}: only for the local backend; with --backend slurm use "
                             "--gpus-per-task, --cpus-per-task and --per-task ([slurm] in the study file)")
    if backend == "local" and slurm_flags:
        used = ", ".join("--" + k.replace("_", "-") for k in slurm_flags)
        raise SelectionError(f"{used}: only with --backend slurm; add it, or use --gpus/--workers on this machine")
    sel = c.load(file, matrix or (), where or ())
    sel = c.with_upstream_runs(sel)
    if backend == "slurm":
        return _submit(sel, slurm_flags, set(rerun or ()))
    from runner.backends.local import make_slots
    from runner.cli.render import LaunchDisplay, launch_lines
    from runner.launch.scheduler import launch as do_launch

    slots = make_slots(gpus=gpus, per_gpu=per_gpu, workers=workers)
    c.refuse_before_writing(sel, slots)
    store = c.open_store(sel.study, create=True)
    with LaunchDisplay(total=len(sel.runs)) as display:
        result = do_launch(sel.study, sel.runs, store, slots, display, rerun=set(rerun or ()),
                           retries=retries, isolate=isolate)
    launch_lines(result)
    if result.interrupted:
        raise typer.Exit(130)
    if result.failed or result.lost or result.blocked or result.stopped_for:
        raise typer.Exit(1)


def _submit(sel, flags: dict, rerun: set[str]) -> None:
    from runner import commands as c
    from runner.study.messages import validate
    from runner.cli.render import submit_lines
    from runner.launch.scheduler import submit_to_slurm
    from runner.study.slurm import SlurmOptions

    options = validate(SlurmOptions, {**sel.study.slurm, **flags}, sel.study.file,
                       "[slurm] with the command line's flags" if flags else "[slurm]")
    c.refuse_before_writing(sel)
    submit_lines(submit_to_slurm(sel.study, sel.runs, c.open_store(sel.study, create=True), options, rerun=rerun))


@app.command(cls=Command)
def tune(
    name: Annotated[str, typer.Argument(metavar="NAME", autocompletion=complete_tune,
                                        help="A [tune.NAME] block of the study file.")],
    file: FileOpt = DEFAULT_FILE,
    trials: Annotated[Optional[int], typer.Option(
        "--trials", min=1, metavar="N", help="Finished trials to reach (default: the block's trials).")] = None,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Write the best trial's values into the study file as an [[override]] of the tuned cells.")] = False,
    gpus: GpusOpt = None, per_gpu: PerGpuOpt = 1, workers: WorkersOpt = None,
    retries: Annotated[int, typer.Option(
        "--retries", min=0, metavar="N", help="Attempts a trial's run gets again when its worker dies.")] = 2,
    backend: Annotated[str, typer.Option(
        "--backend", metavar="local|slurm", autocompletion=BACKEND,
        help="local (this machine) or slurm (each trial a job; options from [slurm], "
             "array_parallelism trials at once, 4 if unset).")] = "local",
):
    """Optuna over the cells a [tune.NAME] block matches: trials run on all slots, pruned on their
    validation curve, and kept in the study's database (optuna.load_study reads them). Killed, the
    command continues where it stopped. --apply writes the best values back as an [[override]].

    No --matrix or --where: the block's match says which cells are tuned."""
    from runner import commands as c
    from runner.errors import SelectionError, SpecError, choices
    from runner.study.spec import load_study

    study = load_study(file)
    if name not in study.tunes:
        raise SpecError(study.file, f"[tune.{name}]", f"no such block; defined: {choices(study.tunes)}")
    block = study.tunes[name]
    if apply:
        if trials is not None or gpus is not None or workers is not None or per_gpu != 1:
            raise SelectionError("--apply trains nothing: drop --trials, --gpus, --workers and --per-gpu")
        return _apply(study, block)
    if backend not in ("local", "slurm"):
        raise SelectionError(f"--backend {backend}: choose local or slurm")
    if backend == "slurm" and (gpus is not None or workers is not None or per_gpu != 1):
        raise SelectionError("--gpus, --workers, --per-gpu: only for the local backend; with --backend slurm "
                             "the [slurm] section of the study file says what each trial's job gets")
    from rich.markup import escape

    from runner.plan.expand import expand
    from runner.cli.render import LaunchDisplay, console, err_console, tune_line

    plan = expand(study)
    if backend == "slurm":
        from runner.study.messages import validate
        from runner.study.slurm import SlurmOptions
        from runner.tune.slurm import tune_on_slurm

        options = validate(SlurmOptions, study.slurm, study.file, "[slurm]")
        store = c.open_store(study, create=True)
        with LaunchDisplay(total=trials or block.trials, metric=block.metric) as display:
            result = tune_on_slurm(study, plan, block, store, options, display, trials=trials)
    else:
        from runner.backends.local import make_slots
        from runner.tune.tuner import tune as do_tune

        slots = make_slots(gpus=gpus, per_gpu=per_gpu, workers=workers)
        store = c.open_store(study, create=True)
        with LaunchDisplay(total=trials or block.trials, metric=block.metric) as display:
            result = do_tune(study, plan, block, store, slots, display, trials=trials, retries=retries)
    console.print(escape(tune_line(result, block.metric, study.file, name)))
    if result.stopped_for:
        err_console.print("[red]stopped[/]: " + escape(result.stopped_for), soft_wrap=True)
    if result.interrupted:
        raise typer.Exit(130)
    if result.stopped_for:
        raise typer.Exit(1)


def _apply(study, block) -> None:
    from runner.tune.apply import apply

    a = apply(study, block)
    print(f"{'updated' if a.replaced else 'wrote'} the [[override]] tuned_by {block.name} in {study.file}: "
          + ", ".join(f"{k} = {v!r}" for k, v in a.params.items())
          + f" (trial {a.number}, {block.metric} = {a.value:.4g}); {a.new_runs} run(s) of {a.new_cells} cell(s) "
          "get new ids: `runner plan` shows their state")


@app.command(cls=Command)
def probe(
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="NAME", autocompletion=complete_probe, help="[[probe]] blocks to run (default: all of them).")] = None,
    file: FileOpt = DEFAULT_FILE, matrix: MatrixOpt = None, where: WhereOpt = None, gpus: GpusOpt = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, metavar="N", help="CPU workers (default 1: timings want a quiet machine).")] = 1,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, metavar="N", help="torch threads per worker (default: the cores shared out).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Probe again runs that already have this probe's result.")] = False,
):
    """Analyses of finished runs beyond accuracy: attention maps, shape bias on cue-conflict images,
    inference time. Each loads a run's selected weights in a worker and writes its result into the
    run folder and the store; a run is never probed twice with the same settings."""
    from analysis.probe_figures import FIGURES

    from runner import commands as c
    from runner.cli import render
    from runner.probes.launch import run_blocks
    from runner.records.runfolder import read_json

    def block_done(result) -> None:
        # a kind's figures of its result folders are drawn now (those of the report, by the report):
        # the block's new results as one group, in the store's shape
        figures = FIGURES[result.probe.kind]
        if figures is not None:
            figures(result.probe, {result.probe.name: [
                {"folder": str(folder), "label": label, "summary": read_json(folder / "result.json")["summary"]}
                for (label, _), folder in zip(result.done, result.folders)]})
        print(render.probe_line(result), flush=True)

    sel = c.load(file, matrix or (), where or ())
    try:
        results = run_blocks(sel, names or (), gpus=gpus, workers=workers, threads=threads, force=force,
                             on_start=render.probe_started, on_result=render.probe_landed, on_block=block_done)
    except KeyboardInterrupt:  # between workers: every result written so far is in its run folder
        raise typer.Exit(130) from None
    if any(r.interrupted for r in results):
        raise typer.Exit(130)
    if any(r.failed for r in results):
        raise typer.Exit(1)


@app.command(cls=Command)
def cancel(file: FileOpt = DEFAULT_FILE, matrix: MatrixOpt = None, where: WhereOpt = None):
    """Stop selected runs of the running launch: queued ones never start, running ones checkpoint and stop.

    Cancelled runs resume at the next `runner launch`."""
    from runner import commands as c

    sel = c.load(file, matrix or (), where or ())
    queued, running, tasks = c.cancel(sel)
    if not queued and not running:
        print("nothing to cancel: no selected run is queued or running")
        return
    print(f"cancelled {len(queued)} queued run(s); {len(running)} running run(s) stop at their next step and keep "
          "a checkpoint (they resume at the next `runner launch`)"
          + (f"; scancel {' '.join(tasks)} (nothing else to run in them)" if tasks else ""))


@app.command(cls=Command)
def status(file: FileOpt = DEFAULT_FILE, matrix: MatrixOpt = None, where: WhereOpt = None, json_: JsonOpt = False,
           watch: Annotated[Optional[float], typer.Option(
               "--watch", metavar="SECONDS", help="Refresh every SECONDS seconds until Ctrl-C.")] = None):
    """Counts by state, running cells with epoch and ETA, failures with their reason."""
    from runner import commands as c
    from runner.launch.lock import running_launch

    if watch:
        gc.enable()  # refreshed until Ctrl-C
    sel = c.load(file, matrix or (), where or ())
    while True:
        launch_info = running_launch(sel.study.runs_dir) or {}
        entries = c.run_entries(sel, c.records_for(sel, ingest=True), queued=set(launch_info.get("runs") or ()))
        c.join_slurm(sel, entries)
        view = c.overview(entries)
        if sel.study.tunes:
            from runner.tune.results import summaries

            view["tuning"] = summaries(sel.study)
        if json_:
            from runner.cli.render import print_json

            print_json(view)
        else:
            from runner.cli.render import console, status_view

            if watch:
                console.clear()
            status_view(sel.study.name, view)
        if not watch:
            break
        time.sleep(watch)
    if view["counts"].get(State.FAILED):
        raise typer.Exit(1)


@app.command(cls=Command)
def report(file: FileOpt = DEFAULT_FILE, matrix: MatrixOpt = None, where: WhereOpt = None,
           table: Annotated[Optional[list[str]], typer.Option(
               "--table", "-t", metavar="NAME", autocompletion=complete_table,
               help="Only this [[table]] (repeatable).")] = None,
           figure: Annotated[Optional[list[str]], typer.Option(
               "--figure", metavar="NAME", autocompletion=complete_figure,
               help="Only this figure (repeatable).")] = None,
           fmt: Annotated[str, typer.Option(
               "--format", metavar="FORMAT", help="What stdout shows: md, latex, csv or html.")] = "md",
           out: Annotated[Optional[Path], typer.Option(
               "--out", metavar="DIR", help="Write the files here. A whole report writes the study's report_dir; one filtered by "
                            "--matrix, --where, --table or --figure only prints unless --out is given.")] = None,
           no_figures: Annotated[bool, typer.Option("--no-figures", help="Tables only.")] = False,
           runs: Annotated[bool, typer.Option("--runs", help="Print the runs behind the tables (CSV) instead.")] = False,
           check: Annotated[bool, typer.Option("--check", help="Exit 1 if a declared cell is missing or stale; write nothing.")] = False):
    """The study's tables and figures from the store: stdout shows the tables; the report directory gets
    each table as Markdown, LaTeX and CSV, the runs behind them, the figures (PNG, PDF) and index.html.

    A filtered report (--matrix, --where, --table, --figure) prints and writes nothing unless --out DIR."""
    from analysis import report as r

    from runner import commands as c

    if fmt not in r.FORMATS:
        from runner.errors import SelectionError

        raise SelectionError(f"--format {fmt}: choose one of {', '.join(r.FORMATS)}")
    sel = c.load(file, matrix or (), where or ())
    command = ["runner", "report", *(["-f", str(file)] if file != DEFAULT_FILE else []),
               *(a for m in matrix or () for a in ("--matrix", m)), *(a for w in where or () for a in ("--where", w))]
    # the study's report folder is the paper: only a whole report writes it; a filtered one prints
    filtered = bool(matrix or where or table or figure)
    if figure and out is None and not (check or runs):
        from runner.errors import SelectionError

        raise SelectionError(f"--figure {figure[0]}: a figure is a file, and a filtered report writes only with --out; "
                             f"add --out DIR (`runner report` alone redraws {sel.study.report_dir}/figures/)")
    writes = out is not None or not (filtered or check or runs)
    blocked = None
    if writes:
        from runner.records.places import unwritable

        if (blocked := unwritable(out or sel.study.report_dir)) and out is not None:
            from runner.errors import SelectionError

            raise SelectionError(f"--out {out}: {blocked}; choose a folder you can write")
        writes = blocked is None  # a read-only study's report is printed, and says it was not written
    rep = c.report(sel, command, tables=table or (), figures=figure or (),
                   with_figures=writes and not (no_figures or check or runs))
    if check:
        problems = r.check(rep)
        for line in problems:
            print(line)
        cells = sum(len(t.cells) for t in rep.tables)
        print(f"report check: {len(problems)} problem(s) in {cells} cell(s) of {len(rep.tables)} table(s)"
              if problems else f"report check: all {cells} cell(s) of {len(rep.tables)} table(s) done with the code installed now")
        if problems:
            raise typer.Exit(1)
        return
    if runs:
        from analysis.formats import sources_csv

        sys.stdout.write(sources_csv(rep.tables))
        return
    if not rep.tables and not rep.figures and not rep.texts:
        print(f"{sel.study.file}: nothing to report: no [[table]] declared (or selected) and no finished run to draw",
              file=sys.stderr)
        return
    if not writes:
        sys.stdout.write(r.render(rep, fmt))
        if blocked:
            print(f"nothing written: {sel.study.report_dir}: {blocked}; add --out DIR to write the report elsewhere",
                  file=sys.stderr)
            return
        print(f"nothing written: a report filtered by --matrix, --where, --table or --figure only prints; "
              f"add --out DIR to write its files ({sel.study.report_dir}/ is what `runner report` writes)", file=sys.stderr)
        return
    out_dir = out or sel.study.report_dir
    written = r.write(rep, out_dir)
    if rep.tables or rep.texts or fmt == "html":
        sys.stdout.write(r.render(rep, fmt, figures_dir=out_dir / "figures"))
    figures = (f"; {written['figures']} figure(s), {written['drawn']} drawn, {written['unchanged']} unchanged"
               if rep.figures else "")
    page = ", index.html" if rep.complete else ""
    print(f"written to {out_dir}/: {written['tables']} table(s) as .md, .tex, .csv and .runs.csv{figures}{page}",
          file=sys.stderr)


@app.command(cls=Command)
def show(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id or a unique prefix of one (a cell id, as `runner plan` shows, lists its runs).")],
         file: FileOpt = DEFAULT_FILE, json_: JsonOpt = False):
    """Everything known of one run: config, attempts with provenance, summary, last metrics.

    One run, named by its id: no --matrix or --where."""
    from runner import commands as c
    from runner.study.spec import load_study

    info = c.show(load_study(file), run_id)
    if json_:
        from runner.cli.render import print_json

        return print_json(info)
    from runner.cli.render import show_view

    show_view(info)


@app.command(cls=Command)
def sync(file: FileOpt = DEFAULT_FILE,
         rebuild: Annotated[bool, typer.Option("--rebuild", help="Forget the index and rebuild it from the run folders.")] = False):
    """Ingest the run folders into the store (the folders are the journal, the store its index).

    Every run folder of the study is read: no --matrix or --where."""
    from runner import commands as c
    from runner.study.spec import load_study

    study = load_study(file)
    store = c.open_store(study, create=True, rebuild=rebuild)  # --rebuild: also a store of another schema
    n = store.rebuild(study.runs_dir) if rebuild else store.ingest(study.runs_dir)
    print(f"{n} run(s) {'indexed' if rebuild else 'updated'} in {study.store}")
    for rec in store.runs(details=False, state=State.CORRUPT).values():  # damage is said, never absorbed:
        print(f"corrupt {rec.label} {rec.id}: {rec.reason}", file=sys.stderr)  # `--rerun corrupt` trains them again


from runner.cli.data import data_app  # noqa: E402  (the `runner data ...` commands)
app.add_typer(data_app, name="data")


def main() -> None:
    gc.disable()  # until a command that lives long turns it back on (READ_AND_EXIT)
    try:
        app(prog_name="runner")  # also under `python -m runner`: the name users type, and _RUNNER_COMPLETE
    except RunnerError as e:
        if os.environ.get("RUNNER_DEBUG"):
            raise
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
