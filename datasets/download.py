"""Fetching and checking data, only when the user asks (``runner data download|verify``).

Downloads go through torchvision's downloaders (its mirrors and checksums). Verification
compares the official MD5 sums where torchvision knows them, then reads every split
through the same reader training uses, so a truncated or misplaced file shows up here
rather than hours into a launch.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from .cifar import CIFAR10Options, CIFAR100Options
from .errors import DataError
from .mnist import FashionMNISTOptions, MNISTOptions
from .options import Options

_TORCHVISION = {MNISTOptions: "MNIST", FashionMNISTOptions: "FashionMNIST", CIFAR10Options: "CIFAR10",
                CIFAR100Options: "CIFAR100"}


def download(opts: Options) -> None:
    """Fetch a source into ``opts.root`` with torchvision; DataError (one line) if it cannot."""
    name = _TORCHVISION.get(type(opts))
    if name is None:
        raise DataError(f"{type(opts).__name__.removesuffix('Options')} cannot be downloaded by runner; {opts.missing() or ''}")
    import torchvision.datasets as tvd

    Path(opts.root).mkdir(parents=True, exist_ok=True)
    chatter = io.StringIO()  # torchvision prints progress and mirror failures; keep them for the error
    try:
        with contextlib.redirect_stdout(chatter):
            for train in (True, False):
                getattr(tvd, name)(opts.root, train=train, download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        reason = " ".join(str(e).split())  # torchvision lists every mirror it tried over several lines
        raise DataError(f"could not download {name} into {opts.root}: {reason}; without network, copy the files "
                        f"there by hand ({opts.missing() or 'see the layout in README'})") from None


def verify(opts: Options, read) -> list[tuple[str, str, bool]]:
    """(what, result, ok) per check: official checksums, then each split read through ``read(split)``."""
    checks: list[tuple[str, str, bool]] = []
    problem = opts.missing()
    if problem:
        return [("layout", problem, False)]
    from torchvision.datasets.utils import check_integrity

    for path, md5 in _checksums(opts):
        if path.is_file():
            ok = check_integrity(str(path), md5)
            checks.append((f"md5 {path.name}", "matches the official release" if ok else f"differs from {md5}", ok))
    for split in ("train", "val", "test"):
        try:
            dataset, info = read(split)
            checks.append((f"read {split}", f"{len(dataset)} images, {info.num_classes} classes", True))
        except DataError as e:
            checks.append((f"read {split}", str(e), False))
    return checks


def _checksums(opts: Options) -> list[tuple[Path, str]]:
    import torchvision.datasets as tvd

    if isinstance(opts, CIFAR10Options):
        cls = tvd.CIFAR100 if isinstance(opts, CIFAR100Options) else tvd.CIFAR10
        folder = opts.folder()
        return [(folder / f, md5) for f, md5 in cls.train_list + cls.test_list] + [(folder / cls.meta["filename"], cls.meta["md5"])]
    if isinstance(opts, MNISTOptions):
        cls = tvd.FashionMNIST if isinstance(opts, FashionMNISTOptions) else tvd.MNIST
        found = opts.locate() or {}
        base = next(iter(found.values())).parent if found else Path(opts.root)
        return [(base / f, md5) for f, md5 in cls.resources]  # the .gz files, when they were kept
    return []  # digits ships with scikit-learn; image folders have no official checksums
