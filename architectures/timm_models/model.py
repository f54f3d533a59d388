"""Any timm model by name (``timm:convnext_tiny``), from scratch or, with
``pretrained = true``, from weights timm can load: its hub download or a local
file named by ``pretrained_cfg_overlay = { file = "..." }``. Where neither is
possible (no network here) the error says so.
"""

from __future__ import annotations


def build(model_name: str, hp, *, num_classes: int, in_chans: int, img_size: int):
    import timm

    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **(hp.model_extra or {})}
    try:
        try:  # transformers take the image size; most CNNs refuse the keyword
            return timm.create_model(model_name, pretrained=hp.pretrained, **{"img_size": img_size, **kwargs})
        except TypeError as e:
            if "img_size" not in str(e):
                raise
            return timm.create_model(model_name, pretrained=hp.pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        if not hp.pretrained:
            raise
        raise RuntimeError(f"timm:{model_name}: pretrained weights could not be loaded ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); this machine cannot download them: put the weights "
                           "in the Hugging Face cache or set pretrained = false") from None
