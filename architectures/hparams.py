"""What every family's hyperparameters share: the strict base class and the checks several
families make against the dataset.

Each family declares its own class in its package's ``__init__.py``, beside its model and
torch-free like this module: ``runner plan`` validates a whole study against them without
importing torch (3-5 s here).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Hparams(BaseModel):
    """Base: unknown keys and loose types are refused (``heads = "8"`` is an error)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    def check(self, *, img_size: int, in_chans: int, num_classes: int) -> tuple[str, str] | None:
        """Cross-check against the dataset: ``(key, problem)`` or None when possible."""
        return None


Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]  # gelu_tanh: GELU's tanh approximation


def changed_default(default, *, was, description: str, **constraints):
    """A field whose default changed to follow the reference code: ``was`` is what runs trained
    before the change. Run ids leave a key out when it holds ``was`` (not ``default``), so a run
    whose effective value changed gets a new id and one that asks for the old value keeps its
    old id (``runner/plan/identity.py``)."""
    return Field(default, description=description, json_schema_extra={"id_default": was}, **constraints)


def id_default(field):
    """The value a key is left out of the run id at: ``changed_default``'s ``was``, else the default."""
    extra = field.json_schema_extra or {}
    return extra["id_default"] if "id_default" in extra else field.get_default(call_default_factory=True)


def heads_divide(heads_key: str, heads: int, dim_key: str, dim: int) -> tuple[str, str] | None:
    if dim % heads:
        return heads_key, f"{heads} heads do not divide {dim_key} {dim}; choose {heads_key} among {divisors(dim)}"
    return None


def patch_divides(patch: int, img_size: int) -> tuple[str, str] | None:
    if img_size % patch:
        return "patch_size", f"patch size {patch} does not divide the image size {img_size}; choose among {divisors(img_size)}"
    return None


def same_chans(declared: int | None, actual: int) -> tuple[str, str] | None:
    if declared is not None and declared != actual:
        return "in_chans", f"the dataset has {actual} channel(s), not {declared}; leave in_chans out to follow the dataset"
    return None


def divisors(n: int) -> str:
    """``"1, 2, 4, 8"``: the choices a divisibility error offers."""
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
