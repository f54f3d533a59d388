"""What a probe reads of a finished run: its dataset's options and its model with the selected weights."""

from __future__ import annotations

from pathlib import Path


def dataset_options(dataset: dict):
    """The options object of a resolved ``dataset`` section (what its info and names come from)."""
    import datasets

    opts = dict(dataset)
    source = opts.pop("source")
    return source, datasets.get_source(source).options(**opts)


def load_model(run_folder: Path, config: dict, device):
    """The run's model with its selected weights (``model.pt``, loaded with ``weights_only=True``:
    opening it runs no code), in eval mode."""
    import torch

    from runner.train.loop import build_model

    _, opts = dataset_options(config["dataset"])
    model = build_model(config["architecture"], opts.info())
    weights = run_folder / "model.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: the run has no saved weights (trained before model.pt was kept?)")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device).eval()
