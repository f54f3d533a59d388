"""What each probe computes on a trained model (torch). Each returns ``(summary, arrays)``: the
summary goes into the probe's ``result.json`` and the store, the arrays into ``.npz`` files
of the probe's folder (what its figures are drawn from).

* ``attention_maps``: per attention layer and head, on the first N images of a split, the
  attention of one query over all keys, the mean over all queries, and the mean attention
  distance in image pixels (Dosovitskiy et al.'s Fig. 7); for conv-equivalent attention with
  quadratic encoding, the learned centres and spreads of every head (Cordonnier et al.'s figure).
* ``shape_bias``: decisions on cue-conflict images and the shape-bias fraction (runner/probes/cue_conflict.py).
* ``inference_time``: images/s and latency per batch size, after warm-up, with device syncs.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from architectures.attention import attention_rows, gaussian_heads
from datasets.classes import class_names

from runner.probes import cue_conflict
from runner.train.engine import resolve_engine
from runner.study.recipe import Recipe
from runner.train.loop import load_split
from runner.train.worker import is_out_of_memory


def dataset_options(dataset: dict):
    """The options object of a resolved ``dataset`` section (what its info and names come from)."""
    import datasets

    opts = dict(dataset)
    source = opts.pop("source")
    return source, datasets.get_source(source).options(**opts)


# ---------------------------------------------------------------- attention maps


def attention_maps(model, config: dict, settings: dict, device: torch.device) -> tuple[dict, dict]:
    data, info = load_split(config["dataset"], settings["split"])
    n = min(settings["images"], len(data))
    x = torch.stack([data[i][0] for i in range(n)]).to(device)
    labels = [int(data[i][1]) for i in range(n)]
    query = settings["query"] if isinstance(settings["query"], str) else tuple(settings["query"])
    rows = attention_rows(model, x, query)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    arrays = {"images": (x.cpu() * std + mean).clamp(0, 1).numpy().astype(np.float32),
              "labels": np.array(labels), "layers": np.array([r.layer for r in rows])}
    layers = []
    for i, r in enumerate(rows):
        arrays[f"query_{i}"] = r.query.numpy()
        arrays[f"mean_{i}"] = r.mean.numpy()
        arrays[f"distance_{i}"] = distance = r.distance.numpy()
        layers.append({"layer": r.layer, "heads": int(r.query.shape[1]), "grid": list(r.grid), "prefix": r.prefix,
                       "query_token": r.query_index, "normalized": r.normalized,
                       "mean_distance_px": float(distance.mean())})
    summary = {"images": n, "labels": labels, "split": settings["split"], "query": settings["query"],
               "layers": layers, "mean_distance_px": [lay["mean_distance_px"] for lay in layers]}
    gauss = gaussian_heads(model)
    if gauss:
        arrays["gauss_centres"] = torch.stack([c for c, _ in gauss]).numpy()  # [L, H, 2] (row, col)
        arrays["gauss_inv_cov"] = torch.stack([s for _, s in gauss]).numpy()  # [L, H, 2, 2]
        summary["gaussian_layers"] = len(gauss)
    return summary, arrays


# ---------------------------------------------------------------- shape bias


def shape_bias(model, config: dict, settings: dict, device: torch.device, study_dir: Path) -> tuple[dict, dict]:
    from datasets.transforms import eval_transform

    source, opts = dataset_options(config["dataset"])
    info = opts.info()
    categories, stimuli = cue_conflict.list_stimuli(study_dir / settings["root"])
    groups = cue_conflict.category_classes(categories, class_names(source, opts), settings["classes"])
    transform = eval_transform(info, getattr(opts, "crop_pct", 1.0))
    mode = "L" if info.in_chans == 1 else "RGB"
    decisions = []
    bs = settings["batch_size"]
    for start in range(0, len(stimuli), bs):
        batch = stimuli[start:start + bs]
        x = torch.stack([transform(_image(s.path, mode)) for s in batch]).to(device)
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        decisions += [categories[i] for i in cue_conflict.decide(probs, groups)]
    shapes, textures = [s.shape for s in stimuli], [s.texture for s in stimuli]
    summary = cue_conflict.shape_bias(decisions, shapes, textures)
    summary["per_category"] = cue_conflict.per_category(decisions, shapes, textures, categories)
    summary["categories"] = list(categories)
    root = study_dir / settings["root"]
    arrays = {"files": np.array([str(Path(s.path).relative_to(root)) for s in stimuli]),
              "shape": np.array(shapes), "texture": np.array(textures), "decision": np.array(decisions)}
    return summary, arrays


def _image(path: str, mode: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert(mode)


# ---------------------------------------------------------------- inference time


def inference_time(model, config: dict, settings: dict, device: torch.device) -> tuple[dict, dict]:
    """Per batch size: warm-up, then timed forward passes, each followed by a device sync, for at
    least ``min_time_s`` and ``min_iters``; the median time is the latency, batch / median the
    throughput. A batch size that runs out of memory ends the list (larger ones would too)."""
    _, opts = dataset_options(config["dataset"])
    info = opts.info()
    engine = resolve_engine(Recipe(**config["train"]), device, model, "loader")
    precision = engine.precision if settings["precision"] == "run" else settings["precision"]
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                if precision != "fp32" else None)
    model = model.to(memory_format=engine.memory_format)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    results = []
    for bs in settings["batch_sizes"]:
        try:
            results.append(_time_batch(model, bs, (info.in_chans, info.img_size, info.img_size), device, autocast,
                                       engine.memory_format, sync, settings))
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            results.append({"batch_size": bs, "error": "out of memory"})
            break
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return {"device": str(device), "hardware": hardware, "precision": precision,
            "channels_last": engine.channels_last, "batches": results}, {}


@torch.no_grad()
def _time_batch(model, bs, shape, device, autocast, memory_format, sync, settings) -> dict:
    x = torch.randn(bs, *shape, device=device).contiguous(memory_format=memory_format)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward():
        if autocast is None:
            return model(x)
        with autocast:
            return model(x)

    for _ in range(settings["warmup"]):
        forward()
    sync()
    times, start = [], time.perf_counter()
    while len(times) < settings["min_iters"] or time.perf_counter() - start < settings["min_time_s"]:
        t0 = time.perf_counter()
        forward()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10_000:
            break
    median = statistics.median(times)
    p90 = sorted(times)[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
    return {"batch_size": bs, "images_per_s": bs / median, "latency_ms": 1000 * median, "p90_ms": 1000 * p90,
            "iters": len(times),
            "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
