"""Any timm model by name (``timm:convnext_tiny``), built from scratch.

Pretrained weights need a download, which this builder never attempts.
"""

from __future__ import annotations


def build(model_name: str, hp, *, num_classes: int, in_chans: int, img_size: int):
    import timm

    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **(hp.model_extra or {})}
    try:  # transformers take the image size; most CNNs refuse the keyword
        return timm.create_model(model_name, pretrained=False, **{"img_size": img_size, **kwargs})
    except TypeError as e:
        if "img_size" not in str(e):
            raise
        return timm.create_model(model_name, pretrained=False, **kwargs)
