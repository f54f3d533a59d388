"""Expected run lengths, so the launcher can start the longest runs first.

Handing the longest run to the next free slot (LPT list scheduling) keeps a matrix's
makespan near its lower bound, max(longest run, total / slots): short runs fill the gaps
at the end instead of a long one starting last. The estimates only have to rank runs:

1. a run whose cell already finished with other seeds takes what those took (mean wall time
   of their attempts);
2. otherwise its work, forward FLOPs per image x images it will train on, times a rate in
   seconds per unit of work fitted on finished runs: of the same model family if any, else of
   all of them. With no history at all the work alone ranks the runs.

FLOPs come from earlier summaries of the same architecture on the same data, or are counted
on torch's meta device (no memory, no data, ~50 ms a model); only then is torch imported.
"""

from __future__ import annotations

import json
import statistics
from typing import Callable, Iterable

from runner.plan.runs import Run

FlopsOf = Callable[[dict, dict], "float | None"]


def longest_first(runs: list[Run], expected: dict[str, float | None]) -> list[Run]:
    """Runs by expected length, longest first; unknown lengths count as the median known one,
    and ties keep the plan's order."""
    known = [v for v in expected.values() if v is not None]
    fill = statistics.median(known) if known else 0.0
    return sorted(runs, key=lambda r: -(expected.get(r.id) if expected.get(r.id) is not None else fill))


def expected_seconds(runs: Iterable[Run], history: list[dict], flops_of: FlopsOf | None = None) -> dict[str, float | None]:
    """Expected length of each run. ``history``: finished runs as ``{cell, config, summary, seconds}``
    (``Store.history``). The result is in seconds when any history calibrates it, else in units
    of work; either way it ranks the runs. None: unknown (``longest_first`` ranks it as the median)."""
    runs = list(runs)
    flops_of = flops_of or meta_flops
    flops_cache: dict[str, float | None] = {}

    def flops(config: dict, summary: dict | None = None) -> float | None:
        key = _model_key(config)
        if key not in flops_cache:
            flops_cache[key] = (summary or {}).get("flops") or flops_of(config["architecture"], config["dataset"])
        return flops_cache[key]

    by_cell: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}  # seconds per FLOP-image, by model family and overall ("*")
    for h in history:
        seconds, summary = h.get("seconds"), h.get("summary") or {}
        if not seconds or seconds <= 0:
            continue
        by_cell.setdefault(h["cell"], []).append(seconds)
        work = _work(h["config"], flops(h["config"], summary), summary)
        if work:
            for family in (h["config"]["architecture"]["model"], "*"):
                rates.setdefault(family, []).append(seconds / work)

    out: dict[str, float | None] = {}
    for r in runs:
        if r.cell in by_cell:
            out[r.id] = statistics.fmean(by_cell[r.cell])
            continue
        work = _work(r.config, flops(r.config))
        rate = rates.get(r.config["architecture"]["model"]) or rates.get("*")
        if work is None or (by_cell and not rate):  # work without a rate is not comparable to seconds
            out[r.id] = None
        else:
            out[r.id] = work * (statistics.median(rate) if rate else 1.0)
    return out


def _work(config: dict, flops: float | None, summary: dict | None = None) -> float | None:
    """FLOPs per image x images trained on: from a finished run's summary, else from its plan."""
    if not flops:
        return None
    s = summary or {}
    images = ((s.get("epochs") or 0) * (s.get("n_train") or 0) or (s.get("steps") or 0) * config["train"]["batch_size"]
              or images_to_train(config))
    return flops * images if images else None


def images_to_train(config: dict) -> int | None:
    """Images the run will push through the model: epochs x the train split, or fewer with max_steps."""
    n = train_split_size(config["dataset"])
    t = config["train"]
    if n is None:
        return None
    images = t["epochs"] * n
    if t.get("max_steps"):
        images = min(images, t["max_steps"] * t["batch_size"])
    return images


def train_split_size(dataset: dict) -> int | None:
    return _options(dataset).train_images()


def _options(dataset: dict):
    """A run's resolved dataset section as its source's options (torch-free)."""
    import datasets

    opts = dict(dataset)
    return datasets.get_source(opts.pop("source")).options(**opts)


def meta_flops(architecture: dict, dataset: dict) -> float | None:
    """Forward FLOPs of one image, counted on the meta device; None if the model cannot be built
    there, or torch cannot be imported (the workers then say why, with their logs)."""
    try:
        import torch

        from runner.train.measure import count_flops
        from runner.train.loop import build_model
    except Exception:
        return None
    info = _options(dataset).info()
    if info.num_classes is None:  # an image folder not on disk yet: its head hardly matters here
        info = type(info)(1000, info.in_chans, info.img_size, info.mean, info.std)
    try:
        with torch.device("meta"):
            model = build_model(architecture, info)
            return count_flops(model, torch.empty(1, info.in_chans, info.img_size, info.img_size))
    except Exception:  # a model that needs real tensors to build: ranked as a median run
        return None


def _model_key(config: dict) -> str:
    """What FLOPs per image depend on: the architecture and the data's shape, not the recipe or seed."""
    data = {k: v for k, v in config["dataset"].items() if k != "root"}
    return json.dumps([config["architecture"], data], sort_keys=True)
