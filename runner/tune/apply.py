"""``runner tune NAME --apply``: the best trial's values written into the study file.

The values become an ``[[override]]`` for the cells the block matched, tagged with
``tuned_by = {study, trial, metric, value}``; applying again (after more trials)
replaces that override in place rather than adding another. The file is edited with
tomlkit, so its comments, order and layout stay as the user wrote them, and it is
replaced atomically, only once the edited text parses as a valid study.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import RunnerError, SpecError
from runner.records.runfolder import write_atomic
from runner.study.spec import Study, parse_study
from runner.study.tune import Tune


@dataclass(frozen=True)
class Applied:
    number: int
    value: float
    params: dict[str, Any]
    replaced: bool  # an earlier --apply of this block was updated
    new_runs: int = 0  # runs of the study whose id the override changed
    new_cells: int = 0


def apply(study: Study, tune: Tune) -> Applied:
    """The best trial's values into the study file; counts the runs whose ids that changes."""
    from dataclasses import replace

    from runner.plan.expand import expand
    from runner.study.spec import load_study
    from runner.tune.tuner import tuned_cells
    from runner.tune.study import open_study

    before = expand(study)
    cells = tuned_cells(study, before, tune)
    number, value, params = best_trial(study, tune, open_study(study, tune, cells, create=False))
    applied = write_override(study, tune, number, value, params)
    after = expand(load_study(study.file))
    new_ids = {r.id for r in after.runs} - {r.id for r in before.runs}
    return replace(applied, new_runs=len(new_ids), new_cells=len({r.cell for r in after.runs if r.id in new_ids}))


def best_trial(study: Study, tune: Tune, ostudy) -> tuple[int, float, dict[str, Any]]:
    if ostudy is None:
        raise RunnerError(f"{study.file}: [tune.{tune.name}] has no trials yet; run `runner tune {tune.name}` first")
    try:
        best = ostudy.best_trial
    except ValueError:
        raise RunnerError(f"{study.file}: [tune.{tune.name}] has no complete trial yet (all pruned or failed); "
                          f"run `runner tune {tune.name} --trials N` for more") from None
    others = [t.params for t in ostudy.trials if t.number != best.number]
    return best.number, best.value, {k: readable(v, [o[k] for o in others if k in o]) for k, v in best.params.items()}


def readable(value: Any, others: list[Any]) -> Any:
    """A sampled float at 4 significant digits (``0.001235``, not ``0.0012345678901``), or as
    many more as it takes to tell it from every other trial's value; other values as they are."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    for digits in range(4, 18):
        short = float(f"{value:.{digits}g}")
        if all(float(f"{o:.{digits}g}") != short for o in others if isinstance(o, float) and o != value):
            return short
    return value


def write_override(study: Study, tune: Tune, number: int, value: float, params: dict[str, Any]) -> Applied:
    """Write (or update) the block's ``[[override]]`` in the study file."""
    import tomlkit

    path = Path(study.file)  # as the user named it, relative to where the command runs
    text = path.read_text(encoding="utf-8")
    doc = tomlkit.parse(text)
    tag = {"study": tune.name, "trial": number, "metric": tune.metric, "value": float(value)}
    overrides = doc.get("override")
    mine = None
    if overrides is not None:
        mine = next((o for o in overrides if (o.get("tuned_by") or {}).get("study") == tune.name), None)
    if mine is None:
        mine = tomlkit.table()
        mine.comment(f"written by `runner tune {tune.name} --apply`")
        if overrides is None:
            doc.append("override", tomlkit.aot())
            overrides = doc["override"]
        overrides.append(mine)
        replaced = False
    else:
        replaced = True
    mine["match"] = _inline(tune.match)
    mine["set"] = _inline(params)
    mine["tuned_by"] = _inline(tag)
    new_text = tomlkit.dumps(doc)
    if not replaced:  # a blank line before the new block, as a person would leave
        new_text = re.sub(r"(?<=[^\n])\n(\[\[override\]\] # written by `runner tune )", r"\n\n\1", new_text)
    new_text = re.sub(r"(\ntuned_by = \{[^\n]*\}\n)(?=[^\n])", r"\1\n", new_text)  # and one before what follows
    try:
        parse_study(tomllib.loads(new_text), file=study.file, base=study.dir)
    except SpecError as e:  # the tuned values must make a valid study before the file is touched
        raise RunnerError(f"{study.file}: not written, the tuned override would make it invalid: {e.detail}") from None
    write_atomic(path, lambda f: f.write(new_text.encode("utf-8")))
    return Applied(number, value, params, replaced)


def _inline(values: dict[str, Any]):
    import tomlkit

    t = tomlkit.inline_table()
    t.update(values)
    return t
