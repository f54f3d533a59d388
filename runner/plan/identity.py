"""What a run is: the part of its resolved config that defines what is trained, and its ids.

A run's resolved config is ``{architecture, dataset, train, seed}``. Its id is a short sha256
of the canonical JSON of that config's identity, so anything that changes what is trained
makes a new run and nothing else does: names of tables and blocks are labels, not identity,
and ``dataset.root`` (where the data lies, not what it is) is left out of the hash. The cell
id is the same hash without the seed. ``ids`` is the one place both are made: expansion,
tuning trials (``derive``) and stages (``runner/plan/stages.py``) all call it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Mapping

from architectures.hparams import id_default
from runner.study.recipe import is_identity
from runner.study.selectors import equal, schema_of

ID_LENGTH = 12
NOT_IDENTITY = {("dataset", "root")}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def identity_section(section: str, body: dict[str, Any]) -> dict[str, Any]:
    """The keys of one resolved section that define what is trained: not ``NOT_IDENTITY``, not
    engine fields (speed switches, see ``runner.study.recipe``), and not those at their schema default,
    so a new option whose default keeps the old behaviour leaves every id as it was
    (``tests/test_identity.py`` pins the defaults for that reason). A default changed to follow a
    paper's code (``architectures.hparams.changed_default``) counts at its old value instead: the
    runs it changes get new ids, a run asking for the old value keeps its old one."""
    schema = schema_of(section, body)
    fields = schema.model_fields if schema is not None else {}
    out = {}
    for key, value in body.items():
        if (section, key) in NOT_IDENTITY:
            continue
        field = fields.get(key)
        if field is not None and not is_identity(field):
            continue
        if field is not None and not field.is_required() and equal(value, id_default(field)):
            continue
        out[key] = value
    return out


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines what is trained."""
    return {k: (identity_section(k, v) if isinstance(v, dict) else v) for k, v in config.items()}


def part_json(key: str, value: Any) -> str:
    """The canonical JSON of one top-level entry's identity (expansion keeps it per distinct section)."""
    if type(value) is int:  # the seed, once per run: its JSON without starting an encoder
        return str(value)
    return canonical_json(identity_section(key, value) if isinstance(value, dict) else value)


def ids(config: dict[str, Any], *, parts: Mapping[str, str] | None = None,
        upstream_cell: str | None = None) -> tuple[str, str]:
    """(run id, cell id) of a resolved config.

    ``parts``: ``part_json`` of some entries, already known (a 10,000-run plan has a few dozen
    distinct sections). ``upstream_cell``: the cell id of the run a ``train.init = "run:<id>"``
    starts from; the cell id then names ``"cell:<upstream cell>"`` instead of the upstream's run
    id, so the seeds of a fine-tuning cell stay one cell while each seed's run id still changes
    with its own upstream."""
    known = parts or {}
    run, cell = [], []
    for key, value in sorted(config.items()):  # canonical JSON's key order
        member = _key(key) + ":" + (known[key] if key in known else part_json(key, value))
        run.append(member)
        if key == "train" and upstream_cell is not None:
            train = {**identity_section("train", value), "init": "cell:" + upstream_cell}
            member = _key(key) + ":" + canonical_json(train)
        if key != "seed":
            cell.append(member)
    return short_hash("{" + ",".join(run) + "}"), short_hash("{" + ",".join(cell) + "}")


@functools.lru_cache(maxsize=64)
def _key(name: str) -> str:
    """A config's top-level key as JSON (the same four in every run of a 10,000-run plan): the
    members of ``canonical_json`` of the whole config, joined in its key order, are that JSON."""
    return canonical_json(name)
