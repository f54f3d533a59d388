"""``[tune.NAME]`` blocks of ``experiments.toml``: an Optuna study over the cells they match.

```toml
[tune.vit_lr]
match = { architecture = "vit_tiny", dataset = "digits" }   # the cells tuned together
metric = "best_val_acc"          # a summary metric; direction follows its name unless given
trials = 20
epochs = 10                      # the budget of each trial (default: the cell's own epochs)
space = { lr = { low = 1e-4, high = 3e-3, log = true }, warmup_epochs = { choices = [0, 2] } }
sampler = { kind = "tpe", seed = 0 }
pruner = { kind = "median", startup_trials = 3 }
```

Validated here alone (keys, bounds, kinds); whether the sampled values fit each matched
cell (heads dividing dim, ...) is checked in ``runner/tune/tuner.py`` against the plan. Torch-free,
Optuna-free: ``runner plan`` parses these blocks too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runner.errors import SpecError, choices
from runner.study.messages import NAME_RE, show_value, validate
from runner.study.reports import default_style

# what a trial may be judged by, and the per-epoch metric its pruning watches
OBJECTIVES = {"best_val_acc": "val_acc", "val_acc": "val_acc", "val_loss": "val_loss",
              "train_acc": "train_acc", "train_loss": "train_loss"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class _Sampler(_Strict):
    kind: Literal["tpe", "random"] = "tpe"
    seed: int = Field(0, ge=0, description="the same seed samples the same trials, given the same results")
    startup_trials: int = Field(10, ge=0, description="tpe: random trials before the model takes over")
    multivariate: bool = Field(False, description="tpe: model the parameters jointly")


class _Pruner(_Strict):
    kind: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(5, ge=0, description="median: trials that finish before any is pruned")
    warmup_epochs: int = Field(0, ge=0, description="median: epochs a trial runs before it may be pruned")
    min_epochs: int = Field(1, ge=1, description="hyperband: the smallest budget of a bracket")
    reduction_factor: int = Field(3, ge=2, description="hyperband: 1/reduction_factor of trials go on each round")


class _TuneBlock(_Strict):
    match: dict[str, Any] = Field(min_length=1)
    metric: str = "best_val_acc"
    direction: Literal["maximize", "minimize"] | None = None
    trials: int = Field(20, ge=1)
    epochs: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, description="the seed each trial trains (default: the cell's first)")
    space: dict[str, dict[str, Any]] = Field(min_length=1)
    sampler: _Sampler = _Sampler()
    pruner: _Pruner = _Pruner()


@dataclass(frozen=True)
class Param:
    """One dimension of the space: ``kind`` float, int or choice."""

    key: str  # as written: "lr", "architecture.depth"
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this parameter's value."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def edges(self) -> list[Any]:
        """Values the sampler may return at the edges of the space: each is checked against every cell."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


@dataclass(frozen=True)
class Tune:
    name: str
    match: dict[str, Any]
    metric: str
    direction: str
    trials: int
    epochs: int | None
    seed: int | None
    space: tuple[Param, ...]
    sampler: dict[str, Any]
    pruner: dict[str, Any]

    @property
    def watch(self) -> str:
        """The per-epoch metric reported to Optuna, which the pruner compares across trials."""
        return OBJECTIVES[self.metric]

    def fingerprint(self) -> str:
        """What makes earlier trials comparable with new ones: changing any of it starts over."""
        what = {"match": self.match, "metric": self.metric, "direction": self.direction, "epochs": self.epochs,
                "seed": self.seed, "space": [p.__dict__ | {"choices": list(p.choices)} for p in self.space]}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_tunes(body: Any, file: str, check_key) -> dict[str, Tune]:
    """All ``[tune.NAME]`` tables; ``check_key(key, where, axes)`` validates an axis or dotted key."""
    if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
        raise SpecError(file, "[tune]", "write each study as a table: [tune.NAME]")
    return {name: parse_tune(name, block, file, check_key) for name, block in body.items()}


def parse_tune(name: str, body: dict, file: str, check_key) -> Tune:
    where = f"[tune.{name}]"
    if not NAME_RE.fullmatch(name):
        raise SpecError(file, where, "names use letters, digits, '_', '-' and '.'")
    t = validate(_TuneBlock, body, file, where)
    for key in t.match:
        check_key(key, f"{where} match", True)
    if t.metric not in OBJECTIVES:
        hint = ("; tuning on the test split makes the test score part of the model choice, use the validation "
                "split" if t.metric.startswith("test_") else "")
        raise SpecError(file, where, f"metric: {show_value(t.metric)} cannot guide a study; choose one of "
                                     f"{choices(OBJECTIVES)}{hint}")
    direction = t.direction or ("maximize" if default_style(t.metric).best == "max" else "minimize")
    space = tuple(_param(key, spec, file, f"{where} space", check_key) for key, spec in t.space.items())
    return Tune(name, dict(t.match), t.metric, direction, t.trials, t.epochs, t.seed, space,
                t.sampler.model_dump(), t.pruner.model_dump())


def _param(key: str, spec: dict, file: str, where: str, check_key) -> Param:
    check_key(key, where, False)
    at = f"{where} {key}"
    known = {"low", "high", "log", "step", "choices", "type"}
    for k in spec:
        if k not in known:
            raise SpecError(file, at, f"{k}: unknown key; a range takes low, high, log, step, type; "
                                      "a list of values takes choices")
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise SpecError(file, at, "choices: give either choices or low/high, not both")
        values = spec["choices"]
        if not isinstance(values, list) or not values:
            raise SpecError(file, at, f"choices: expected a non-empty list, got {show_value(values)}")
        for v in values:
            if not isinstance(v, (bool, int, float, str)):
                raise SpecError(file, at, f"choices: {show_value(v)}: only numbers, strings and booleans can be sampled")
        if len({json.dumps(v) for v in values}) != len(values):
            raise SpecError(file, at, "choices: each value may appear once")
        return Param(key, "choice", choices=tuple(values))
    if "low" not in spec or "high" not in spec:
        raise SpecError(file, at, "give low and high (a range), or choices (a list of values)")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for k, v in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SpecError(file, at, f"{k}: expected a number, got {show_value(v)}")
    if not isinstance(log, bool):
        raise SpecError(file, at, f"log: expected true or false, got {show_value(log)}")
    kind = spec.get("type") or ("int" if all(isinstance(v, int) for v in (low, high)) else "float")
    if kind not in ("int", "float"):
        raise SpecError(file, at, f'type: expected "int" or "float", got {show_value(kind)}')
    if kind == "int" and not all(isinstance(v, int) for v in (low, high, step or 1)):
        raise SpecError(file, at, 'type = "int": low, high and step must be integers')
    if not low < high:
        raise SpecError(file, at, f"low must be below high, got {show_value(low)} and {show_value(high)}")
    if log and low <= 0:
        raise SpecError(file, at, f"log = true: low must be > 0, got {show_value(low)}")
    if step is not None and (step <= 0 or log):
        raise SpecError(file, at, "step: must be > 0, and cannot be combined with log = true")
    if kind == "float":
        low, high = float(low), float(high)
    return Param(key, kind, low, high, log, step)
