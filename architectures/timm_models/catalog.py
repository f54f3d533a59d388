"""The pinned timm's model names and the keywords each model's module accepts, written to
``catalog.json`` beside this file so that ``runner plan`` can refuse ``timm:resnet18x`` or
``drop_rat = 0.1`` without importing timm (3-5 s) or torch.

Regenerate after changing the timm pin::

    python -m architectures.timm_models.catalog

``tests/test_architectures.py`` regenerates it from the installed timm and fails when the shipped
file is out of date. A model's keywords are those of the entrypoint, of ``timm.create_model`` and its builder, and
of every ``nn.Module`` class its module defines (the model class and the blocks it passes them
to), so a keyword timm accepts is never refused; a misspelt one almost always is.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

FILE = Path(__file__).with_name("catalog.json")
BUILT_BY_RUNNER = ("num_classes", "in_chans", "img_size")  # the runner passes these from the dataset
FEATURES = ("features_only", "out_indices", "feature_cls")  # read by timm's builder from the keywords


def generate() -> dict:
    import importlib

    import timm
    import torch.nn as nn
    from timm.models import _builder, _registry

    def named_parameters(fn) -> set[str]:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return set()
        return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}

    common = (named_parameters(timm.create_model) | named_parameters(_builder.build_model_with_cfg) | set(FEATURES)) - {
        "model_name", "model_cls", "variant", "kwargs_filter"}
    models, modules = {}, {}
    for name in timm.list_models():
        module = _registry._model_to_module[name]
        models[name] = module
        if module not in modules:
            mod = importlib.import_module(f"timm.models.{module}")
            keys = set()
            for obj in vars(mod).values():
                if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == mod.__name__:
                    keys |= named_parameters(obj.__init__)
            modules[module] = keys
        modules[module] |= named_parameters(_registry.model_entrypoint(name))
    return {"timm": timm.__version__, "common": sorted(common | set(BUILT_BY_RUNNER)),
            "models": dict(sorted(models.items())), "keywords": {m: sorted(k) for m, k in sorted(modules.items())}}


def text(catalog: dict) -> str:
    return json.dumps(catalog, indent=0, sort_keys=True) + "\n"


if __name__ == "__main__":
    FILE.write_text(text(generate()), encoding="utf-8")
    print(f"wrote {FILE}")
