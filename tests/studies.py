"""The study files the tests write, built from a few keywords instead of a page of TOML each.

``study_toml()`` is the tiny study (a small ViT and a small ResNet on scikit-learn digits, two
seeds, one table); every keyword replaces one part of it. The text comes out the way a person
writes it (``lr = 3e-3``, ``architectures = ["vit", "cnn"]``), because many tests edit it by
text: a typo in one key, a model that does not exist, one more line in a block.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal

VIT = {"model": "vit", "patch_size": 4, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32}
CNN = {"model": "resnet18_cifar", "width": 4}
DIGITS = {"source": "digits"}
RECIPE = {"epochs": 2, "batch_size": 128, "lr": 3e-3, "warmup_epochs": 0}
ACCURACY = {"name": "accuracy", "rows": "architecture", "columns": "dataset", "metric": "test_acc"}


def study_toml(name: str = "tiny", *, seeds: Sequence[int] = (0, 1), defaults: Mapping = RECIPE,
               architectures: Mapping[str, Mapping] | None = None, datasets: Mapping[str, Mapping] | None = None,
               matrices: Sequence[Mapping] | None = None, tables: Sequence[Mapping] = (ACCURACY,), extra: str = "",
               **recipe) -> str:
    """The text of a study file.

    ``defaults`` is the whole ``[defaults]`` recipe (empty: no section) and ``recipe`` changes keys of
    it (``study_toml(epochs=1)``); ``architectures`` and ``datasets`` map names to their tables
    (default: ``vit`` and ``cnn``, ``digits``); ``matrices`` default to one block ``main`` over all of
    them; ``extra`` is TOML appended as written (overrides, probes, tune blocks, comments)."""
    architectures = {"vit": VIT, "cnn": CNN} if architectures is None else architectures
    datasets = {"digits": DIGITS} if datasets is None else datasets
    if matrices is None:
        matrices = [{"name": "main", "architectures": list(architectures), "datasets": list(datasets)}]
    sections = [_table("[study]", {"name": name, "seeds": list(seeds)})]
    if defaults or recipe:
        sections.append(_table("[defaults]", {**defaults, **recipe}))
    sections += [_table(f"[architectures.{k}]", v) for k, v in architectures.items()]
    sections += [_table(f"[datasets.{k}]", v) for k, v in datasets.items()]
    sections += [_table("[[matrix]]", m) for m in matrices]
    sections += [_table("[[table]]", t) for t in tables]
    text = "\n\n".join(sections) + "\n"
    return text + ("\n" + extra.lstrip("\n") if extra else "")


def toml_value(value) -> str:
    """One TOML value: strings quoted, small floats in e-notation (3e-3, not 0.003), inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def _table(header: str, fields: Mapping) -> str:
    return "\n".join([header, *(f"{_key(k)} = {toml_value(v)}" for k, v in fields.items())])


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _float(value: float) -> str:
    if value == 0 or abs(value) >= 0.01 or not math.isfinite(value):
        return repr(value)
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{exponent + len(digits) - 1}"
