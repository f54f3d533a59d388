"""Any timm model by name: what can be set, and the ``timm:`` registration (torch-free; the
builder is in ``model.py``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .._registry import register_prefix


class TimmHparams(BaseModel):
    """Any timm model: keyword arguments pass through to ``timm.create_model`` unchecked,
    except ``pretrained``, which needs weights from the hub (an error where none can be had)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    pretrained: bool = False

    def check(self, *, img_size, in_chans, num_classes):
        return None


register_prefix("timm:", TimmHparams, "architectures.timm_models.model:build", "any timm model")
