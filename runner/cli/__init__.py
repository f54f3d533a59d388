"""The Typer app: parse the options, call runner.commands, render with rich. Nothing here decides."""
