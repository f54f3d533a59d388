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

A block's ``kind`` is looked up in runner/probes/kinds/ (one file per kind, its keys among them),
so an unknown kind or key is refused here, at plan time; that package's docstring says how to
add a kind.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, create_model

from runner.errors import SpecError, choices
from runner.probes.kinds import KINDS
from runner.study.messages import check_name, validate

FORMAT = 1  # bump when a probe computes something else for the same settings


class _Common(BaseModel):
    """The keys of every block; a kind's own keys come from its settings schema."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    name: str = Field(min_length=1)
    kind: str
    match: dict[str, Any] = {}


@cache
def _block_model(kind: str) -> type[BaseModel]:
    """A block of that kind: the common keys first, then the kind's (as the error messages list them)."""
    settings = KINDS[kind].settings
    return create_model(f"{settings.__name__}Block", __base__=(settings, _Common))


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str
    match: dict[str, Any]
    settings: dict[str, Any]  # the kind's keys, defaults filled in: what the result depends on
    attention_only: bool = False  # the kind reads attention: runs of families without any are left out

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
        if not isinstance(kind, str) or kind not in KINDS:
            raise SpecError(file, where, f"kind: expected one of {choices(KINDS)}, got {json.dumps(kind)}")
        p = validate(_block_model(kind), body, file, where)
        check_name(p.name, file, where)
        check_where(p.match, f"{where} match")
        settings = p.model_dump(exclude={"name", "kind", "match"})
        if any(q.name == p.name for q in probes):
            raise SpecError(file, where, f'name: "{p.name}" appears twice; each [[probe]] needs its own name')
        probes.append(Probe(p.name, kind, dict(p.match), settings, KINDS[kind].attention_only))
    return tuple(probes)
