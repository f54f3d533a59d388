"""``shape_bias``: decisions on cue-conflict images and the shape-bias fraction (Geirhos et al.,
ICLR 2019; the stimuli and the arithmetic: runner/probes/cue_conflict.py).

Before any worker starts, the block's folder must be laid out as cue-conflict stimuli and each
category must name classes of every probed run's dataset.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from runner.probes.kinds.base import ProbeKind, Settings


class ShapeBias(Settings):
    root: str = Field(min_length=1, description="the cue-conflict folder, relative to the study file")
    classes: dict[str, list[str]] = Field(
        {}, description="cue-conflict category -> the model's class names it stands for (default: the same name)")
    batch_size: int = Field(64, ge=1)


def check(study, probe, tasks: list[dict]) -> None:
    """Refused in one line naming the file, the key and the fix: a cue-conflict folder that is not
    there or not laid out as one, and a category that names no class of a probed run's dataset."""
    from datasets import get_source
    from datasets.classes import class_names
    from datasets.errors import DataError

    from runner.errors import SpecError
    from runner.probes.cue_conflict import StimuliError, category_classes, list_stimuli
    from runner.records.runfolder import read_json

    where = f"[[probe]] {probe.name}"
    try:
        categories, _ = list_stimuli(study.dir / probe.settings["root"])
    except StimuliError as e:
        raise SpecError(study.file, where, f"root: {e}") from None
    seen = set()
    for t in tasks:
        dataset = dict((read_json(Path(t["run_folder"]) / "run.json") or {})["config"]["dataset"])
        source = dataset.pop("source")
        if (source, repr(sorted(dataset.items()))) in seen:
            continue
        seen.add((source, repr(sorted(dataset.items()))))
        try:
            category_classes(categories, class_names(source, get_source(source).options(**dataset)),
                             probe.settings["classes"])
        except (StimuliError, DataError) as e:
            raise SpecError(study.file, where, f"classes: {t['label']}: {e}") from None


def compute(model, config: dict, settings: dict, device, study_dir: Path) -> tuple[dict, dict]:
    import numpy as np
    import torch

    from datasets.classes import class_names
    from datasets.transforms import eval_transform

    from runner.probes import cue_conflict
    from runner.probes.model import dataset_options

    source, opts = dataset_options(config["dataset"])
    info = opts.info()
    categories, stimuli = cue_conflict.list_stimuli(study_dir / settings["root"])
    groups = cue_conflict.category_classes(categories, class_names(source, opts), settings["classes"])
    transform = eval_transform(info, getattr(opts, "crop_pct", 1.0))
    mode = "L" if info.in_chans == 1 else "RGB"
    decisions = []
    bs = settings["batch_size"]
    for start in range(0, len(stimuli), bs):
        batch = stimuli[start:start + bs]
        x = torch.stack([transform(_image(s.path, mode)) for s in batch]).to(device)
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        decisions += [categories[i] for i in cue_conflict.decide(probs, groups)]
    shapes, textures = [s.shape for s in stimuli], [s.texture for s in stimuli]
    summary = cue_conflict.shape_bias(decisions, shapes, textures)
    summary["per_category"] = cue_conflict.per_category(decisions, shapes, textures, categories)
    summary["categories"] = list(categories)
    root = study_dir / settings["root"]
    arrays = {"files": np.array([str(Path(s.path).relative_to(root)) for s in stimuli]),
              "shape": np.array(shapes), "texture": np.array(textures), "decision": np.array(decisions)}
    return summary, arrays


def _image(path: str, mode: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert(mode)


KIND = ProbeKind("shape_bias", ShapeBias, compute, check=check,
                 results=("shape_bias", "shape_match", "texture_match", "conflicting", "cue_decisions", "images",
                          "per_category", "categories"))
