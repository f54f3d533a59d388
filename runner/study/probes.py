"""``[[probe]]`` blocks of ``experiments.toml``: analyses of finished runs beyond their accuracy.

```toml
[[probe]]
name = "attention"               # runner probe attention
kind = "attention_maps"          # attention_maps | shape_bias | inference_time
match = { matrix = "demo", architecture = "vit_tiny" }   # the runs probed (default: all)
images = 4                       # attention_maps: test images; query = "center" | "cls" | [row, col]

[[probe]]
name = "shape"
kind = "shape_bias"
root = "data/cue-conflict"       # <shape>/<shape><n>-<texture><m>.png, as Geirhos et al.'s stimuli
classes = { airplane = ["n02690373"] }   # optional: category -> the model's class names

[[probe]]
name = "speed"
kind = "inference_time"
batch_sizes = [1, 64, 256]
```

A probe's result is keyed by its run and a hash of the block's settings (not its name or
``match``), so a run is probed once per setting; change a setting and it is probed again,
the earlier result kept beside it. Torch-free: ``runner plan`` parses these blocks too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runner.errors import SpecError, choices
from runner.study.messages import validate

KINDS = ("attention_maps", "shape_bias", "inference_time")
FORMAT = 1  # bump when a probe computes something else for the same settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Common(_Strict):
    name: str = Field(min_length=1)
    kind: str
    match: dict[str, Any] = {}


class AttentionMaps(_Common):
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


class ShapeBias(_Common):
    root: str = Field(min_length=1, description="the cue-conflict folder, relative to the study file")
    classes: dict[str, list[str]] = Field(
        {}, description="cue-conflict category -> the model's class names it stands for (default: the same name)")
    batch_size: int = Field(64, ge=1)


class InferenceTime(_Common):
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


_MODELS = {"attention_maps": AttentionMaps, "shape_bias": ShapeBias, "inference_time": InferenceTime}


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str
    match: dict[str, Any]
    settings: dict[str, Any]  # the kind's keys, defaults filled in: what the result depends on

    @property
    def key(self) -> str:
        """What identifies a result of this probe on a run: its kind and settings, hashed."""
        text = json.dumps({"format": FORMAT, "kind": self.kind, **self.settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def folder(self) -> str:
        """The result's folder inside the run folder: ``probes/<name>-<key>``."""
        return f"probes/{self.name}-{self.key}"


def parse_probes(blocks: list[dict], file: str, check_where: Callable[[dict, str], None]) -> tuple[Probe, ...]:
    probes = []
    for i, body in enumerate(blocks, 1):
        where = f"[[probe]] {body['name']}" if isinstance(body.get("name"), str) else f"[[probe]] #{i}"
        kind = body.get("kind")
        if kind not in _MODELS:
            raise SpecError(file, where, f"kind: expected one of {choices(KINDS)}, got {json.dumps(kind)}")
        p = validate(_MODELS[kind], body, file, where)
        check_where(p.match, f"{where} match")
        settings = p.model_dump(exclude={"name", "kind", "match"})
        if any(q.name == p.name for q in probes):
            raise SpecError(file, where, f'name: "{p.name}" appears twice; each [[probe]] needs its own name')
        probes.append(Probe(p.name, kind, dict(p.match), settings))
    return tuple(probes)
