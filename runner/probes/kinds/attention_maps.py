"""``attention_maps``: where each attention head looks, on the first N images of a split.

Per attention layer and head: the attention of one query over all keys, the mean over all
queries, and the mean attention distance in image pixels (Dosovitskiy et al.'s Fig. 7); for
conv-equivalent attention with quadratic encoding, the learned centres and spreads of every head
(Cordonnier et al.'s figure). Runs of families known to have no attention are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import Field, field_validator

from runner.probes.kinds.base import ProbeKind, Settings


class AttentionMaps(Settings):
    images: int = Field(4, ge=1, le=64, description="the first N images of the split")
    split: Literal["test", "val"] = "test"
    query: Union[Literal["center", "cls"], list[int]] = Field(
        "center", description='the query drawn: "center", "cls" (the class token) or an image pixel [row, col]')

    @field_validator("query")
    @classmethod
    def _pixel(cls, v):
        if isinstance(v, list) and (len(v) != 2 or min(v) < 0):
            raise ValueError(f"expected \"center\", \"cls\" or an image pixel [row, col], got {v}")
        return v


def compute(model, config: dict, settings: dict, device, study_dir: Path) -> tuple[dict, dict]:
    import numpy as np
    import torch

    from architectures.attention import attention_rows, gaussian_heads
    from runner.train.loop import load_split

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
        summary["gaussian_layers"] = len(gauss)  # only then: the figure of the centres is drawn from it
    return summary, arrays


KIND = ProbeKind("attention_maps", AttentionMaps, compute,
                 results=("images", "labels", "split", "query", "layers", "mean_distance_px"), attention_only=True)
