"""A per-user cache of what the commands typed most would otherwise recompute from files that
seldom change: the expanded plan of a study (``runner plan``, ``status`` and ``report`` all
expand it, a fifth of a second at 10,000 runs) and the hash of each training-code file (the
code fingerprint parses ~50 files).

Entries are keyed by the contents, or the size and modification time, of every file they were
made from, so an edit makes a new key and nothing is ever invalidated by hand (git's index trusts
the same stamps). A file modified within the last ``RACY_S`` seconds is not trusted to a stamp (a
second edit of the same size within the clock's granularity would keep its stamp): nothing is
cached from it until it is older. A plan whose expansion reads data folders (an image folder's
class count) is never cached: those folders are not among its stamps.

It lives in ``$RUNNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/matrix-runner``, else
``~/.cache/matrix-runner``; ``RUNNER_CACHE_DIR=off`` turns it off. It is written atomically and
any failure to read or write it only means the work is done again: a read-only home costs time,
never a wrong answer.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

RACY_S = 2.0
FORMAT = 1  # bumped when what an entry holds changes shape


def cache_dir() -> Path | None:
    """Where the cache lives; None when ``RUNNER_CACHE_DIR=off``."""
    chosen = os.environ.get("RUNNER_CACHE_DIR")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "matrix-runner"


def stamp(paths: Iterable[Path | str]) -> str | None:
    """A key that changes whenever any of the files changes (path, size, modification time);
    None when one is missing or too recently modified to be trusted to its stamp."""
    h, newest_ok = hashlib.sha256(), time.time() - RACY_S
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_mtime > newest_ok:
            return None
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def key(*parts: str | bytes | None) -> str | None:
    """One key from several (None if any is: something could not be stamped)."""
    if any(p is None for p in parts):
        return None
    h = hashlib.sha256(f"{FORMAT}\0{sys.version}".encode())
    for p in parts:
        h.update(b"\0" + (p if isinstance(p, bytes) else p.encode()))
    return h.hexdigest()[:32]


def load(kind: str, entry: str | None) -> Any | None:
    """The value cached under ``kind/entry``, or None (none, unreadable, or the cache is off)."""
    folder = cache_dir()
    if folder is None or entry is None:
        return None
    collecting = gc.isenabled()
    gc.disable()  # a plan is 100,000 objects: the collector would walk them again and again as they load
    try:
        with open(folder / kind / f"{entry}.pickle", "rb") as f:
            return pickle.load(f)
    except Exception:  # missing, cut, written by another Python: the work is done again
        return None
    finally:
        if collecting:
            gc.enable()


def save(kind: str, entry: str | None, value: Any, *, keep: int = 16) -> None:
    """Cache ``value`` under ``kind/entry`` (all or nothing), keeping the ``keep`` newest entries
    of that kind; failures are ignored."""
    folder = cache_dir()
    if folder is None or entry is None:
        return
    try:
        where = folder / kind
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, where / f"{entry}.pickle")
        entries = sorted(where.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[keep:]:
            old.unlink(missing_ok=True)
    except Exception:
        try:
            os.unlink(tmp)
        except Exception:
            pass
