"""Slots of the local backend. This machine has no GPU, so a fake `nvidia-smi` on PATH stands in
for one with four; everything else about the slots is real."""

from __future__ import annotations

import os

import pytest

from runner.backends.local import make_slots
from runner.errors import BackendError


@pytest.fixture
def four_gpus(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nfor i in 0 1 2 3; do echo \"GPU $i: NVIDIA H100 (UUID: GPU-$i)\"; done\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def test_gpu_count_and_list_with_sharing(four_gpus):
    assert [s.gpu for s in make_slots(gpus="2", per_gpu=1, workers=None)] == ["0", "1"]
    slots = make_slots(gpus="0,2,3", per_gpu=2, workers=None)
    assert [(s.name, s.gpu, s.device) for s in slots][:2] == [("gpu0.0", "0", "cuda"), ("gpu0.1", "0", "cuda")]
    assert sorted({s.gpu for s in slots}) == ["0", "2", "3"] and len(slots) == 6


def test_gpus_that_do_not_exist_are_refused(four_gpus):
    with pytest.raises(BackendError, match="has 4 NVIDIA GPU"):
        make_slots(gpus="0,7", per_gpu=1, workers=None)
    with pytest.raises(BackendError, match="expected a count"):
        make_slots(gpus="first", per_gpu=1, workers=None)


def test_cpu_workers_share_the_cores():
    slots = make_slots(gpus=None, per_gpu=1, workers=2)
    assert [s.device for s in slots] == ["cpu", "cpu"]
    assert all(s.threads == max(1, (os.cpu_count() or 1) // 2) for s in slots)
