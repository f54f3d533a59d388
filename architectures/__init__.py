"""The architecture registry: ``create_model(name, *, num_classes, in_chans, img_size, **hparams)``.

A family is one package: ``<family>/__init__.py`` declares its hyperparameters (a pydantic
class: types, defaults, the cross-checks against the dataset) and registers its names, with
no torch; ``<family>/model.py`` holds the ``nn.Module`` and the ``build`` function, imported
only when a model is built. ``timm:<model>`` builds any timm model. Importing this package
never imports torch, so ``runner plan`` validates a study in milliseconds.

To add a family ``foo``:

1. ``architectures/foo/model.py``: the paper in the module docstring, the model, and
   ``build(hp, *, num_classes, in_chans, img_size) -> nn.Module``; shared pieces come from
   ``layers.py``; attention a probe can read follows the protocols of ``attention.py``;
2. ``architectures/foo/__init__.py``: ``FooHparams(Hparams)`` (``hparams.py`` has the base and
   the shared checks) and ``register("foo", FooHparams, "architectures.foo.model:build",
   summary, attention=...)``, importing nothing heavier than pydantic;
3. the import of ``foo`` below.

The registry-wide tests (``tests/test_architectures.py``) then want a small configuration of
``foo`` in their ``small()``; ``python tests/test_identity.py`` adds its defaults to the golden
file that pins them.
"""

from __future__ import annotations

# Imported for their registrations; each is torch-free.
from . import cnn, conv_attention, dual_attention, san, timm_models, vit  # noqa: F401
from ._registry import Family, create_model, get_family, list_models, register, register_prefix

__all__ = ["Family", "create_model", "get_family", "list_models", "register", "register_prefix"]
