"""The dataset registry: ``build_dataset(source, *, root, split, **options)``.

A source is one package: ``<source>/__init__.py`` declares its options (a pydantic class:
what can be set, the data's shape, where its files must be) and registers its names, with no
torch; ``<source>/reader.py`` reads a split into a torch dataset, imported only when data is
built. Importing this package never imports torch, so ``runner plan`` can validate options
and check that data is on disk in milliseconds. Batches for training come from
``datasets.batches`` (device-resident or DataLoader).

To add a source ``foo``:

1. ``datasets/foo/reader.py``: ``build(opts, split) -> Dataset`` for split in ``SPLITS``;
   small data as an ``arrays.ImageArray`` (the GPU-resident path takes it), files decoded
   per image like ``folder/reader.py`` otherwise; missing or malformed data raises
   ``DataError`` in one line;
2. ``datasets/foo/__init__.py``: ``FooOptions(Options)`` (``options.py`` has the base:
   ``NATIVE`` shape, ``missing()``, ``train_images()``) and
   ``register(Source("foo", FooOptions, "datasets.foo.reader:build", summary, get=...))``,
   importing nothing heavier than pydantic;
3. the import of ``foo`` below; class names in ``classes.py`` if probes need them, and
   torchvision's downloader in ``download.py`` if it can fetch the data.

``python tests/test_identity.py`` adds the new options' defaults to the golden file that pins them.
"""

from __future__ import annotations

# Imported for their registrations; each is torch-free.
from . import cifar, digits, folder, mnist  # noqa: F401
from ._registry import SPLITS, Source, build_dataset, data_problem, get_source, list_sources, register
from .augmentation import Augmentation, check_auto_augment
from .errors import DataError
from .options import DatasetInfo

__all__ = ["Augmentation", "DataError", "DatasetInfo", "Source", "build_dataset", "check_auto_augment", "data_problem",
           "get_source", "list_sources", "register", "SPLITS"]
