"""The errors a user can cause, each rendered by the CLI as one line and exit code 2.

Anything raised that is *not* a ``RunnerError`` is a bug in runner and keeps its
traceback. ``RUNNER_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations


class RunnerError(Exception):
    """Base of every user-facing error: the message is the whole story."""

    exit_code = 2


class SpecError(RunnerError):
    """The study file is malformed: syntax, unknown key, wrong type, impossible value."""

    def __init__(self, file: str, where: str, message: str):
        self.file, self.where, self.detail = file, where, message
        location = f" {where}" if where else ""
        super().__init__(f"{file}:{location} {message}" if location else f"{file}: {message}")


class SelectionError(RunnerError):
    """A ``--where`` or ``--matrix`` selection that cannot be understood."""


class StoreError(RunnerError):
    """The results database cannot be opened or is of another schema version."""


class BackendError(RunnerError):
    """A launch cannot start: another launcher runs the study, no such GPU, ..."""


class WorkerStartError(RunnerError):
    """No worker can start on this machine (an import error, a broken environment): not bad input,
    so exit code 1, with the last lines of the worker's log."""

    exit_code = 1


class DataError(RunnerError):
    """A dataset is missing or not in the layout its reader expects."""


def choices(names) -> str:
    """Render valid choices the same way everywhere: ``a, b, c``."""
    names = sorted(str(n) for n in names)
    return ", ".join(names) if names else "(none defined)"
