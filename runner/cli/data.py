"""``runner data ...``: the study's datasets: where they are, fetch them, check them.

Its own Typer app, mounted by ``runner/cli/app.py``; like every command, torch is imported only by
those that read images (``verify``) or download (``download``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from runner.cli.completion import complete_dataset
from runner.cli.options import DEFAULT_FILE, Command, FileOpt, JsonOpt

data_app = typer.Typer(help="Datasets of the study: where they are, fetch them, check them. These act on datasets, "
                            "not runs: no --matrix or --where.", no_args_is_help=True)
NamesArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="NAME", autocompletion=complete_dataset,
    help="Dataset names of the study, or sources (every dataset of that source); default all.")]
RootOpt = Annotated[Optional[Path], typer.Option(
    "--root", metavar="DIR", help="Act on sources placed here instead of the study's datasets.")]


def _data_targets(file: Path, names, root):
    from runner import commands as c
    from runner.study.spec import load_study

    return c.data_targets(load_study(file) if root is None else None, names or (), root)


@data_app.command("list", cls=Command)
def data_list(names: NamesArg = None, file: FileOpt = DEFAULT_FILE, root: RootOpt = None, json_: JsonOpt = False):
    """Each dataset with its source, root and whether its files are in place (reads no image)."""
    from runner import commands as c

    rows = [{"dataset": t.name, "source": t.source, "root": t.options.get("root"), "problem": c.data_state(t)}
            for t in _data_targets(file, names, root)]
    if json_:
        from runner.cli.render import print_json

        return print_json(rows)
    from runner.cli.render import data_view

    data_view(rows)


@data_app.command("download", cls=Command)
def data_download(names: NamesArg = None, file: FileOpt = DEFAULT_FILE, root: RootOpt = None):
    """Fetch datasets with torchvision's downloaders into their roots (the only command that downloads)."""
    from runner import commands as c

    for t in _data_targets(file, names, root):
        if c.data_state(t) is None:
            print(f"{t.name}: already in place at {t.options.get('root') or '(bundled)'}")
            continue
        c.require_downloadable(t)
        print(f"{t.name}: downloading {t.source} into {t.options['root']} ...", flush=True)
        c.data_download(t)
        print(f"{t.name}: done")


@data_app.command("verify", cls=Command)
def data_verify(names: NamesArg = None, file: FileOpt = DEFAULT_FILE, root: RootOpt = None):
    """Check official checksums (where known) and read every split; exit 1 if anything is wrong."""
    from runner import commands as c

    bad = 0
    for t in _data_targets(file, names, root):
        for what, result, ok in c.data_verify(t):
            print(f"{t.name}: {what}: {'ok' if ok else 'FAILED'}, {result}")
            bad += not ok
    if bad:
        raise typer.Exit(1)
