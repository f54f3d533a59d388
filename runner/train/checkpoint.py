"""Checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint is one ``torch.save`` of plain containers and tensors (model, optimizer,
scaler and EMA state dicts, loop counters, the RNG states of Python, NumPy, torch and
CUDA), so it loads with ``weights_only=True``: opening a checkpoint never runs code.
It is written to a temp file in the run folder, fsynced, then renamed over the old one,
so a kill or a full disk at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runner.records.runfolder import no_space, write_atomic

FORMAT = 1


def rng_state() -> dict[str, Any]:
    """The RNG states of this process, as tensors and tuples (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """random.setstate wants tuples all the way down; a round trip may hand back lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_atomic(path: Path, obj: Any) -> None:
    """``torch.save`` all or nothing (see ``runfolder.write_atomic``)."""
    write_atomic(path, lambda f: torch.save(obj, f))


def save(path: Path, checkpoint: dict[str, Any]) -> bool:
    """Write ``checkpoint``; False (and a line on stderr) if the filesystem refused it, in which
    case the previous checkpoint is still in place and the run goes on. A full disk is raised
    (``DiskFull``): the run stops there, interrupted, and resumes from the previous checkpoint."""
    try:
        save_atomic(path, {"format": FORMAT, **checkpoint})
        return True
    except OSError as e:
        if no_space(e):
            raise
        print(f"checkpoint not written ({path}): {e}; the previous one is kept", file=sys.stderr)
        return False


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None if there is none."""
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # written atomically, so only a foreign or hand-edited file gets here
        raise ValueError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}); "
                         f"delete it to train this run from scratch") from e
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint of format {FORMAT}; delete it to train this run from scratch")
    return checkpoint


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of a module's state dict on the CPU (for the best weights and for saving)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
