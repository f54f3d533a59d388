"""The options several commands share, declared once so that they read, complete and help alike.

``-f/--matrix/--where`` select runs: every command that acts on runs takes all three
(``plan``, ``launch``, ``status``, ``report``, ``cancel``, ``probe``); those that cannot take a
selection (``tune``, ``show``, ``sync``, ``data``) take ``-f`` alone and say why in their help.
Every option and argument has a metavar that names what to type (FILE, NAME, KEY=VALUE, N), never
a Python type; ``Command`` makes help show an argument's metavar alone, as it does an option's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from runner.cli.completion import complete_matrix, complete_where

DEFAULT_FILE = Path("experiments.toml")
FileOpt = Annotated[Path, typer.Option("-f", "--file", metavar="FILE", help="The study file.")]
MatrixOpt = Annotated[Optional[list[str]], typer.Option(
    "--matrix", "-m", metavar="NAME", autocompletion=complete_matrix,
    help="Only runs of this [[matrix]] (repeatable).")]
WhereOpt = Annotated[Optional[list[str]], typer.Option(
    "--where", "-w", metavar="KEY=VALUE", autocompletion=complete_where,
    help="KEY=VALUE on an axis (architecture, dataset, seed, matrix) or a dotted config key "
         "(architecture.depth, epochs); VALUE may be a,b for any of them. Repeatable.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

# where runs train on this machine (launch, tune)
GpusOpt = Annotated[Optional[str], typer.Option(
    "--gpus", metavar="N|I,J,...", help="GPUs to use: a count (4) or indices (0,2,3).")]
PerGpuOpt = Annotated[int, typer.Option("--per-gpu", metavar="K", help="Workers sharing each GPU.")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", metavar="N", help="CPU workers (default: one per core, at most 8).")]


class Command(TyperCommand):
    """Help that lists an argument as its metavar (``NAME``), where Typer would add the Python type
    (``NAME <str>``); options read as Typer writes them."""

    def format_options(self, ctx, formatter) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name = param.metavar + ("..." if param.nargs != 1 else "") if param.metavar else record[0]
                args.append((name, record[1]))
            else:
                opts.append(record)
        for title, records in (("Arguments", args), ("Options", opts)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)
