"""``inference_time``: images/s and latency per batch size, after warm-up, with device syncs.

Per batch size: warm-up, then timed forward passes, each followed by a device sync, for at least
``min_time_s`` and ``min_iters``; the median time is the latency, batch / median the throughput.
A batch size that runs out of memory ends the list (larger ones would too).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from runner.probes.kinds.base import ProbeKind, Settings


class InferenceTime(Settings):
    batch_sizes: list[int] = Field([1, 16, 64, 256], min_length=1)
    warmup: int = Field(10, ge=0, description="forward passes before timing, per batch size")
    min_time_s: float = Field(1.0, gt=0, description="time each batch size for at least this long")
    min_iters: int = Field(10, ge=1)
    precision: Literal["run", "fp32", "bf16", "fp16"] = Field(
        "run", description='"run": the precision the run trained in (bf16 on GPUs, fp32 on CPUs)')

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v):
        if min(v) < 1 or len(set(v)) != len(v):
            raise ValueError(f"expected distinct batch sizes >= 1, got {v}")
        return sorted(v)


def compute(model, config: dict, settings: dict, device, study_dir: Path) -> tuple[dict, dict]:
    import torch

    from runner.probes.model import dataset_options
    from runner.study.recipe import Recipe
    from runner.train.engine import resolve_engine
    from runner.train.worker import is_out_of_memory

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


def _time_batch(model, bs, shape, device, autocast, memory_format, sync, settings) -> dict:
    import torch

    with torch.no_grad():
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


KIND = ProbeKind("inference_time", InferenceTime, compute,
                 results=("device", "hardware", "precision", "channels_last", "batches"))
