"""The code fingerprint: what decides whether a finished run is stale.

A run is stale when the code that trains it changed, not when the repository did: a commit that
only touches the README or the study file changes nothing, and an uncommitted edit of a model's
``forward`` changes it as much as a committed one. So the fingerprint hashes the source that
decides what is trained, as Python sees it (the syntax tree, comments and docstrings left out),
file by file:

* the installed ``architectures/`` and ``datasets/`` packages and ``runner/train/``;
* the versions of torch, torchvision and timm (read from package metadata, nothing imported).

Each attempt records the whole hash and the per-file hashes (``runner show`` lists them), so
``runner plan`` can say which files changed since a stale run. Torch-free: ~0.5 s for the ~50 files on a 2-core machine,
a few ms when their hashes come from the user cache (``runner/cache.py``, by size and modification time).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import architectures
import datasets
from runner import cache as user_cache

CODE_ROOT = Path(architectures.__file__).resolve().parents[1]  # where our packages are installed
SOURCES = (Path(architectures.__file__).resolve().parent, Path(datasets.__file__).resolve().parent,
           Path(__file__).resolve().parents[1] / "train")
LIBRARIES = ("torch", "torchvision", "timm")


@dataclass(frozen=True)
class Fingerprint:
    hash: str  # of every file's hash and the library versions: equal means the same training code
    files: dict[str, str]  # path relative to CODE_ROOT -> its hash
    libraries: dict[str, str | None]  # distribution -> version (None: not installed)

    def as_json(self) -> dict:
        return {"hash": self.hash, "files": self.files, "libraries": self.libraries}


def source_hash(text: str) -> str:
    """A hash of what a module does: its syntax tree without docstrings (comments never reach it)."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def current() -> Fingerprint:
    """The fingerprint of the code installed now (once per process: workers and commands alike).
    Each file's hash comes from the user cache while its size and modification time are those it
    was hashed at (``runner/cache.py``): parsing 50 files is most of a ``runner status``."""
    known = user_cache.load("code", "source-hashes")
    known = known if isinstance(known, dict) else {}
    files, fresh, now_ok = {}, {}, time.time() - user_cache.RACY_S
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            name = str(path.relative_to(CODE_ROOT))
            try:
                st = os.stat(path)
                stamp = (str(path), st.st_size, st.st_mtime_ns)
                hit = known.get(stamp)
                files[name] = hit if hit is not None else source_hash(path.read_text(encoding="utf-8"))
                if st.st_mtime <= now_ok:  # a file edited a moment ago may change again within its stamp
                    fresh[stamp] = files[name]
            except (OSError, SyntaxError, UnicodeDecodeError):
                files[name] = "unreadable"
    if fresh != known:
        user_cache.save("code", "source-hashes", fresh, keep=1)
    libraries = {d: _version(d) for d in LIBRARIES}
    text = "\n".join([*(f"{k} {v}" for k, v in sorted(files.items())), *(f"{k}=={v}" for k, v in libraries.items())])
    return Fingerprint(hashlib.sha256(text.encode()).hexdigest()[:16], files, libraries)


def changes(recorded: dict | None, now: Fingerprint) -> list[str]:
    """What differs between a recorded fingerprint (``as_json``) and now: files changed, added or
    removed, and library versions, as ``runner plan`` lists them."""
    if not recorded:
        return []
    before, libs = recorded.get("files") or {}, recorded.get("libraries") or {}
    out = [f for f in sorted(set(before) | set(now.files)) if before.get(f) != now.files.get(f)]
    out += [f"{d} {libs.get(d)} -> {now.libraries.get(d)}" for d in LIBRARIES if libs.get(d) != now.libraries.get(d)]
    return out
