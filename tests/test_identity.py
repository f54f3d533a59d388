"""What a run id means must not drift: ids leave out keys at their default, so the defaults
themselves are pinned here, and so are the ids of the shipped demo.

If one of these fails, an edit changed what an existing id trains (a default value) or which
id a config gets. Both silently split or merge results across versions; when intended,
regenerate the golden file with ``python tests/test_identity.py`` and say so in the change.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import architectures
import datasets
from architectures.hparams import id_default
from runner.plan.expand import expand
from runner.plan.identity import ids
from runner.study.recipe import Recipe
from runner.study.spec import load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden") / "identity.json"


def _defaults(schema) -> dict:
    """Each key's value that a run id leaves out: its default, or the old default of a key whose
    default changed to follow a paper's code (``changed_default``): what the existing ids trained."""
    return {name: id_default(field) for name, field in sorted(schema.model_fields.items()) if not field.is_required()}


def current() -> dict:
    demo = [r for r in expand(load_study(ROOT / "experiments.toml")).runs if "demo" in r.matrices]
    return {
        "recipe": _defaults(Recipe),
        "architectures": {m: _defaults(architectures.get_family(m).hparams) for m in architectures.list_models()},
        "datasets": {s: _defaults(datasets.get_source(s).options) for s in datasets.list_sources()},
        "demo_run_ids": {r.label: r.id for r in demo},
    }


def test_defaults_and_demo_ids_match_the_golden_file():
    golden = json.loads(GOLDEN.read_text())
    now = json.loads(json.dumps(current()))
    for part in ("recipe", "architectures", "datasets"):
        for name, value in golden[part].items():
            if part == "recipe":
                assert now["recipe"].get(name, "<removed>") == value, f"default of train.{name} changed"
                continue
            for key, default in value.items():
                assert now[part].get(name, {}).get(key, "<removed>") == default, f"default of {part} {name}.{key} changed"
    assert now["demo_run_ids"] == golden["demo_run_ids"]


# The demo's ViT ids before its defaults followed timm (LayerNorm eps 1e-5, class token trunc-normal).
OLD_VIT_TINY = {"vit_tiny/digits/s0": "36f73b197b6b", "vit_tiny/digits/s1": "444c3b613dac",
                "vit_tiny/digits/s2": "8fcd81f1a6e6"}


def test_a_run_asking_for_a_changed_defaults_old_value_keeps_its_old_id():
    """``changed_default``: the runs the new default changes get new ids; spelling the old value
    (its ``was``) gives back the id those runs were trained under, so they stay done."""
    base = (ROOT / "experiments.toml").read_text()
    old = base.replace("[architectures.vit_tiny]\n", '[architectures.vit_tiny]\nnorm_eps = 1e-5\ninit_scheme = "trunc_normal"\n', 1)
    study = parse_study(tomllib.loads(old), file="x.toml", base=ROOT)
    ids_then = {r.label: r.id for r in expand(study).runs if "demo" in r.matrices and r.label.startswith("vit_tiny")}
    assert ids_then == OLD_VIT_TINY
    now = current()["demo_run_ids"]
    assert all(now[label] != run_id for label, run_id in OLD_VIT_TINY.items())


def test_a_key_written_at_its_default_is_the_same_run(tmp_path):
    base = (ROOT / "experiments.toml").read_text()
    spelled = base.replace("[defaults]", '[defaults]\ncrop = "none"\nhflip = 0.0\nmixup = 0.0\nlabel_smoothing = 0', 1)
    study = parse_study(tomllib.loads(spelled), file="x.toml", base=ROOT)
    ids = {r.label: r.id for r in expand(study).runs if "demo" in r.matrices}
    assert ids == current()["demo_run_ids"]
    flipped = parse_study(tomllib.loads(base.replace("[defaults]", "[defaults]\nhflip = 0.5", 1)), file="x.toml", base=ROOT)
    assert not {r.id for r in expand(flipped).runs} & set(ids.values())


def test_ids_of_a_config_agree_with_the_plan():
    for run in expand(load_study(ROOT / "experiments.toml")).runs[:50]:
        assert ids(run.config) == (run.id, run.cell)


if __name__ == "__main__":  # regenerate the golden file after an intended change
    GOLDEN.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
