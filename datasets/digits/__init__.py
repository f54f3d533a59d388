"""scikit-learn's digits: the options and the registration (torch-free; the reader is in ``reader.py``)."""

from __future__ import annotations

from pydantic import Field

from .._registry import Source, register
from ..options import Options


class DigitsOptions(Options):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): no download, the demo."""

    # Pixel values 0..16 scaled to [0, 1]; mean/std of the whole set, fixed so ids stay stable.
    NATIVE = (10, 1, 8, (0.3053,), (0.3760,))
    NEEDS_ROOT = False

    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)

    def _train_split_size(self) -> int:
        return round(1797 * (1 - self.val_fraction - self.test_fraction))


register(Source("digits", DigitsOptions, "datasets.digits.reader:build", "scikit-learn's bundled 8x8 digits, no download",
                get="it ships with scikit-learn"))
