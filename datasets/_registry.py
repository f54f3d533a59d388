"""The registry itself: source names to their options and readers, and building a split.

A source package registers itself when ``datasets`` imports it; the registry keeps only the
reader's ``"module:function"`` path, so torch is imported when data is built, never when a
study is validated or its files are checked.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import DataError
from .options import Options

SPLITS = ("train", "val", "test")
DOWNLOAD = "get it with `runner data download {name}`"  # ``Source.get`` of what torchvision fetches


@dataclass(frozen=True)
class Source:
    name: str
    options: type[Options]
    reader: str  # "module:function", imported lazily
    summary: str
    get: str  # how to obtain the data, for the one-line error when it is missing
    downloadable: bool = False  # torchvision can fetch it: ``runner data download``


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> None:
    """Make ``source.name`` buildable: ``reader(options, split)`` returns the split's torch dataset."""
    if source.name in _REGISTRY:
        raise ValueError(f"dataset source {source.name!r} registered twice")
    _REGISTRY[source.name] = source


def list_sources() -> list[str]:
    return sorted(_REGISTRY)


def get_source(name: str) -> Source | None:
    return _REGISTRY.get(name)


def _options(source: str, root: str | None, options: dict) -> tuple[Source, Options]:
    src = _REGISTRY.get(source)
    if src is None:
        raise KeyError(f"unknown dataset source {source!r}; registered: {', '.join(list_sources())}")
    return src, src.options(root=root, **options)


def _problem(src: Source, opts: Options) -> str | None:
    problem = opts.missing()
    return None if problem is None else f"{problem}; {src.get.format(name=src.name)}"


def data_problem(source: str, *, root: str | None = None, **options) -> str | None:
    """Torch-free check that a dataset's files are in place: None, or one line saying what is
    missing, the layout expected and how to get it."""
    return _problem(*_options(source, root, options))


def build_dataset(source: str, *, root: str | None = None, split: str, **options):
    """Return ``(torch dataset, DatasetInfo)`` for one split of a registered source.

    Raises ``DataError`` (one line: path, layout, how to get it) when the data is missing."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    src, opts = _options(source, root, options)
    problem = _problem(src, opts)
    if problem is not None:
        raise DataError(problem)
    module_name, func = src.reader.split(":")
    return getattr(importlib.import_module(module_name), func)(opts, split), opts.info()
