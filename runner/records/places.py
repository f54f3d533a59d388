"""Where a study writes (its run folders, its SQLite store, its report folder), checked before
anything is written: a place that cannot hold results is one line naming it, never a traceback
from deep inside a write.

``os.access`` cannot tell: it says yes to root everywhere, ``/proc`` included, and knows
nothing of read-only mounts. So the check is a real one: a folder made and removed at once in
the nearest folder that exists (nothing is left behind).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


_NOT_NOW = {errno.EROFS, errno.EACCES, errno.EPERM}  # a read-only mount, someone else's folder


def _probe(path: Path) -> tuple[str, int | None] | None:
    here = Path(path)
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        return f"{here} is a file, not a folder", None
    try:
        os.rmdir(tempfile.mkdtemp(dir=here, prefix=".runner-probe-"))
    except OSError as e:
        return f"cannot write in {here} ({e.strerror or e})", e.errno
    return None


def unwritable(path: Path) -> str | None:
    """Why files cannot be written in folder ``path`` (it may not exist yet); None when they can."""
    found = _probe(path)
    return found[0] if found else None


def impossible(path: Path) -> str | None:
    """Why folder ``path`` can never hold results (``/proc/...``, under a file), as opposed to
    results that are read-only for now (which reading commands read as they are); None otherwise."""
    found = _probe(path)
    return found[0] if found and found[1] not in _NOT_NOW else None


def read_only_reason(runs_dir: Path, store_file: Path | None) -> str | None:
    """Why an existing study's run folders or SQLite store cannot be written (a read-only mount,
    a shared folder of someone else's results), so a reading command reads without ingesting into
    them; None when both can be written, or when neither exists yet."""
    for place in (runs_dir, store_file.parent if store_file is not None else None):
        if place is not None and place.is_dir() and (why := unwritable(place)):
            return why
    return None
