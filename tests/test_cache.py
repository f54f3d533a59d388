"""The user cache (runner/cache.py): the expanded plan and the training code's file hashes come
from it only while every file they were made from is as it was, so a cached answer is never a
stale one; a cache that is off, unreadable or damaged only costs the work again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runner import cache
from runner.commands import expand_cached, load
from runner.plan.expand import expand
from runner.records import fingerprint
from runner.study.spec import load_study
from studies import study_toml


def _age(path: Path, seconds_ago: float = 60.0) -> None:
    """Make a file older than the racy window, as a study edited a minute ago is."""
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(folder))
    return folder


def _study(tmp_path: Path) -> Path:
    f = tmp_path / "experiments.toml"
    f.write_text(study_toml(lr=3e-3))
    _age(f)
    return f


def test_a_cached_plan_is_the_expanded_one_and_an_edit_of_the_same_size_is_seen(tmp_path, own_cache):
    f = _study(tmp_path)
    first = load(f).plan
    assert len(list((own_cache / "plans").glob("*.pickle"))) == 1
    again = load(f).plan
    assert again.runs == first.runs == expand(load_study(f)).runs

    text = f.read_text()
    assert "lr = 3e-3" in text
    f.write_text(text.replace("lr = 3e-3", "lr = 4e-3"))  # same size, another id for every run
    _age(f, 30.0)
    edited = load(f).plan
    assert edited.runs == expand(load_study(f)).runs
    assert {r.id for r in edited.runs}.isdisjoint(r.id for r in first.runs)
    assert len(list((own_cache / "plans").glob("*.pickle"))) == 2


def test_a_study_edited_a_moment_ago_is_expanded_and_not_cached(tmp_path, own_cache):
    f = tmp_path / "experiments.toml"
    f.write_text(study_toml())  # its modification time is now: a second edit could keep its stamp
    plan = expand_cached(load_study(f))
    assert plan.runs == expand(load_study(f)).runs
    assert not list(own_cache.glob("plans/*.pickle"))


def test_off_writes_nothing_and_a_damaged_entry_is_expanded_again(tmp_path, own_cache, monkeypatch):
    f = _study(tmp_path)
    monkeypatch.setenv("RUNNER_CACHE_DIR", "off")
    load(f)
    assert not own_cache.exists()
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(own_cache))
    expected = load(f).plan.runs
    (entry,) = (own_cache / "plans").glob("*.pickle")
    entry.write_bytes(b"not a pickle")
    assert load(f).plan.runs == expected


def test_a_read_only_cache_costs_time_not_an_answer(tmp_path, own_cache):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    own_cache.mkdir()
    own_cache.chmod(0o500)
    try:
        f = _study(tmp_path)
        assert load(f).plan.runs == expand(load_study(f)).runs
    finally:
        own_cache.chmod(0o700)


def test_a_code_file_changed_since_its_hash_was_cached_is_hashed_again(tmp_path, own_cache, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    module = pkg / "model.py"
    module.write_text("def forward(x):\n    return x + 1\n")
    _age(module)
    monkeypatch.setattr(fingerprint, "SOURCES", (pkg,))
    monkeypatch.setattr(fingerprint, "CODE_ROOT", tmp_path)
    fingerprint.current.cache_clear()
    try:
        before = fingerprint.current()
        assert cache.load("code", "source-hashes")  # remembered, by the file's stamp
        fingerprint.current.cache_clear()
        assert fingerprint.current() == before
        module.write_text("def forward(x):\n    return x + 2\n")  # same size
        _age(module, 30.0)
        fingerprint.current.cache_clear()
        after = fingerprint.current()
        assert after.files["pkg/model.py"] != before.files["pkg/model.py"] and after.hash != before.hash
    finally:
        fingerprint.current.cache_clear()


def test_the_cache_is_on_by_default_in_the_users_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNNER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "matrix-runner"
    load(_study(tmp_path))
    assert len(list((tmp_path / "xdg" / "matrix-runner" / "plans").glob("*.pickle"))) == 1
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "matrix-runner"


def test_a_plan_that_counts_class_folders_is_expanded_anew_each_time(tmp_path, own_cache):
    """An image folder's class count comes from its folders (what a model's check against the
    dataset sees), which no cache key stamps: such a plan is never taken from the cache."""
    root = tmp_path / "shapes"
    for split in ("train", "val"):
        for name in ("circle", "square"):
            (root / split / name).mkdir(parents=True)
    f = tmp_path / "experiments.toml"
    f.write_text(study_toml(datasets={"shapes": {"source": "imagefolder", "root": "shapes", "img_size": 32}},
                            architectures={"vit": {"model": "vit", "patch_size": 4, "dim": 32, "depth": 1, "heads": 2,
                                                   "mlp_dim": 64}}))
    _age(f)
    assert load(f).plan.runs == expand(load_study(f)).runs
    assert load(f).plan.runs == expand(load_study(f)).runs
    assert not list(own_cache.glob("plans/*.pickle"))
    # while a study of digits is (the same code path, another source)
    digits = tmp_path / "digits"
    digits.mkdir()
    load(_study(digits))
    assert len(list(own_cache.glob("plans/*.pickle"))) == 1
