"""Cost figures of a run: parameters, FLOPs, inference speed, peak memory.

Measured the same way for every run so the efficiency table compares like with like:
inference at a fixed batch size after warm-up, with device syncs (seed 002's ``time``).
"""

from __future__ import annotations

import contextlib
import resource
import time
from typing import Callable

import torch
from torch import nn

INFER_BATCH = 64  # fixed batch size of the inference-speed figures, so runs compare


def count_flops(model: nn.Module, sample: torch.Tensor) -> int | None:
    """Forward FLOPs of one image (a multiply-add counts 2). Attention goes through the math
    kernel here so its matrix products are counted; None if an op cannot be counted."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(sample)
        return int(counter.get_total_flops())
    except Exception:
        return None


@torch.no_grad()
def inference_speed(model: nn.Module, shape: tuple[int, ...], device: torch.device,
                    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                    memory_format: torch.memory_format = torch.contiguous_format) -> tuple[float, float]:
    """(images/s, ms per batch) at batch ``INFER_BATCH``, after warm-up, with device syncs, in the
    run's precision and memory format."""
    model.eval()
    x = torch.randn(INFER_BATCH, *shape, device=device).contiguous(memory_format=memory_format)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with autocast():
        for _ in range(3):
            model(x)
        sync()
        iters, start = 0, time.perf_counter()
        while iters < 5 or (time.perf_counter() - start < 0.5 and iters < 200):
            model(x)
            iters += 1
        sync()
    elapsed = time.perf_counter() - start
    return INFER_BATCH * iters / elapsed, 1000 * elapsed / iters


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory of this run and what it measures: CUDA allocations, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "process_peak_rss"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
