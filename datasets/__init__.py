"""The dataset registry: ``build_dataset(source, *, root, split, **options)``.

A source name maps to its options class (torch-free, ``options.py``) and a reader
imported only when data is built. Importing this package never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .options import DatasetInfo, DigitsOptions, Options

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    name: str
    options: type[Options]
    reader: str  # "module:function", imported lazily
    summary: str


_REGISTRY: dict[str, Source] = {}


def register(name: str, options: type[Options], reader: str, summary: str) -> None:
    if name in _REGISTRY:
        raise ValueError(f"dataset source {name!r} registered twice")
    _REGISTRY[name] = Source(name, options, reader, summary)


register("digits", DigitsOptions, "datasets.digits:build", "scikit-learn's bundled 8x8 digits, no download")


def list_sources() -> list[str]:
    return sorted(_REGISTRY)


def get_source(name: str) -> Source | None:
    return _REGISTRY.get(name)


def build_dataset(source: str, *, root: str | None = None, split: str, **options):
    """Return ``(torch dataset, DatasetInfo)`` for one split of a registered source."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    src = _REGISTRY.get(source)
    if src is None:
        raise KeyError(f"unknown dataset source {source!r}; registered: {', '.join(list_sources())}")
    opts = src.options(root=root, **options)
    module_name, func = src.reader.split(":")
    return getattr(importlib.import_module(module_name), func)(opts, split), opts.info()


__all__ = ["DatasetInfo", "build_dataset", "get_source", "list_sources", "register", "SPLITS"]
