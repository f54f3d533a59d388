"""Digits: a fixed, stratified, seed-independent split."""

from __future__ import annotations

import torch

from datasets import build_dataset


def test_digits_split_is_fixed_disjoint_and_complete():
    parts = {s: build_dataset("digits", split=s) for s in ("train", "val", "test")}
    sizes = {s: len(ds) for s, (ds, _) in parts.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] > sizes["val"] > 0
    info = parts["train"][1]
    assert (info.num_classes, info.in_chans, info.img_size) == (10, 1, 8)
    rows = {s: {tuple(x.flatten().tolist()) for x in ds.tensors[0]} for s, (ds, _) in parts.items()}
    # no test image also in train (digits has a handful of exact duplicates, hence the tolerance)
    assert len(rows["test"] & rows["train"]) <= 3
    again = build_dataset("digits", split="test")[0]
    assert torch.equal(again.tensors[0], parts["test"][0].tensors[0])


def test_digits_split_is_stratified_and_normalized():
    ds, _ = build_dataset("digits", split="train")
    counts = torch.bincount(ds.tensors[1], minlength=10)
    assert counts.min() >= 0.9 * counts.max()
    assert abs(ds.tensors[0].mean().item()) < 0.05 and abs(ds.tensors[0].std().item() - 1) < 0.05


def test_subset_keeps_the_first_n_per_class():
    ds, _ = build_dataset("digits", split="train", subset=5)
    assert torch.bincount(ds.tensors[1]).tolist() == [5] * 10
