"""Any timm model by name: what can be set, and the ``timm:`` registration (torch-free; the
builder is in ``model.py``)."""

from __future__ import annotations

import difflib
import json
from functools import cache

from pydantic import BaseModel, ConfigDict

from .._registry import register_prefix


@cache
def _catalog() -> dict:
    from .catalog import FILE

    return json.loads(FILE.read_text(encoding="utf-8"))


def _close(name: str, names) -> str:
    found = difflib.get_close_matches(name, list(names), n=3)
    return f"; did you mean {', '.join(found)}?" if found else ""


class TimmHparams(BaseModel):
    """Any timm model: keyword arguments pass through to ``timm.create_model``, checked against
    the pinned timm's catalogue (``catalog.py``) without importing it; ``pretrained`` needs
    weights from the hub (an error where none can be had)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, defer_build=True)

    pretrained: bool = False

    def check(self, *, img_size, in_chans, num_classes):
        return None

    @classmethod
    def check_model(cls, model: str, params: dict) -> tuple[str, str] | None:
        """``(key, message)`` when timm has no such model or the model takes no such keyword."""
        catalog = _catalog()
        name = model.removeprefix("timm:").split(".")[0]  # a pretrained tag (resnet18.a1_in1k) names the same model
        module = catalog["models"].get(name)
        if module is None:
            return "model", f'timm {catalog["timm"]} has no model "{name}"{_close(name, catalog["models"])}'
        accepted = set(catalog["keywords"][module]) | set(catalog["common"])
        for key in params:
            if key not in accepted:
                return key, (f"not a keyword of timm's {name} (timm.models.{module}){_close(key, accepted)}")
        return None


register_prefix("timm:", TimmHparams, "architectures.timm_models.model:build", "any timm model")
