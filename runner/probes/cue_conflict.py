"""Cue-conflict stimuli (Geirhos et al., ICLR 2019) and the shape-bias fraction. No torch.

A cue-conflict image carries the shape of one category and the texture of another. The folder
is laid out as the authors' ``stimuli/style-transfer-preprocessed-512``:

    ROOT/<shape category>/<shape category><n>-<texture category><m>.png

e.g. ``cat/cat7-elephant1.png``. Images whose shape and texture categories agree are left out
of the bias, as in the paper. Of the decisions that pick either cue,

    shape bias = shape decisions / (shape decisions + texture decisions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LAYOUT = ("ROOT/<shape>/<shape><n>-<texture><m>.png, one folder per category, as Geirhos et al.'s "
          "cue-conflict stimuli (e.g. cat/cat7-elephant1.png)")
_NAME = re.compile(r"^(?P<shape>.+?)\d*-(?P<texture>.+?)\d*$")


class StimuliError(ValueError):
    """The folder is missing or not laid out as cue-conflict stimuli; the message says the layout."""


@dataclass(frozen=True)
class Stimulus:
    path: str
    shape: str
    texture: str


def list_stimuli(root: Path) -> tuple[tuple[str, ...], list[Stimulus]]:
    """The categories (sorted folder names) and every image with its two labels."""
    if not root.is_dir():
        raise StimuliError(f"{root}: no cue-conflict folder there; expected {LAYOUT}")
    categories = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not categories:
        raise StimuliError(f"{root}: no category folders; expected {LAYOUT}")
    stimuli = []
    for shape in categories:
        for f in sorted((root / shape).iterdir()):
            if f.suffix.lower() not in EXTENSIONS:
                continue
            m = _NAME.match(f.stem)
            if m is None or m["texture"] not in categories:
                raise StimuliError(f"{f}: the name does not say its texture category (one of the folders); "
                                   f"expected {LAYOUT}")
            stimuli.append(Stimulus(str(f), shape, m["texture"]))
    if not stimuli:
        raise StimuliError(f"{root}: no images ({', '.join(EXTENSIONS)}) in its category folders; expected {LAYOUT}")
    return categories, stimuli


def category_classes(categories: tuple[str, ...], class_names: tuple[str, ...],
                     mapping: dict[str, list[str]]) -> list[list[int]]:
    """For each category, the model's class indices it stands for: those ``mapping`` names, or the
    class of the same name. Raises StimuliError naming what does not match."""
    index = {n: i for i, n in enumerate(class_names)}
    out = []
    for c in categories:
        names = mapping.get(c, [c])
        unknown = [n for n in names if n not in index]
        if unknown:
            shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
            raise StimuliError(f"category {c}: {', '.join(unknown)} not a class of the run's dataset ({shown}); "
                               "map it with classes = { " + c + ' = ["<class name>", ...] }')
        out.append([index[n] for n in names])
    return out


def decide(probs: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """The category each image is taken for: the mean of the model's probabilities over each
    category's classes (as Geirhos et al. map ImageNet's 1,000 classes to 16), arg-maxed."""
    scores = np.stack([probs[:, g].mean(axis=1) for g in groups], axis=1)
    return scores.argmax(axis=1)


def shape_bias(decisions: list[str], shapes: list[str], textures: list[str]) -> dict:
    """The paper's figures for one model: shape bias over the conflicting images, and how often
    it picked the shape, the texture or neither."""
    conflict = [(d, s, t) for d, s, t in zip(decisions, shapes, textures) if s != t]
    n = len(conflict)
    shape_hits = sum(d == s for d, s, _ in conflict)
    texture_hits = sum(d == t for d, _, t in conflict)
    cue = shape_hits + texture_hits
    return {"shape_bias": shape_hits / cue if cue else None, "shape_match": shape_hits / n if n else None,
            "texture_match": texture_hits / n if n else None, "conflicting": n, "cue_decisions": cue,
            "images": len(decisions)}


def per_category(decisions: list[str], shapes: list[str], textures: list[str],
                 categories: tuple[str, ...]) -> dict[str, float | None]:
    """The shape bias of the images of each shape category (the paper's figure, one row each)."""
    out = {}
    for c in categories:
        mine = [(d, s, t) for d, s, t in zip(decisions, shapes, textures) if s == c]
        if mine:
            out[c] = shape_bias(*map(list, zip(*mine)))["shape_bias"]
    return out
