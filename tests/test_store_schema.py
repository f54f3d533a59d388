"""Stores written by earlier runners keep working: upgraded in place when they are opened, or
rebuilt by ``runner sync --rebuild`` from any version, never losing the Optuna studies kept in
the same database. The databases are the files earlier runners wrote (tests/fixtures/old_stores.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import run_cli, write_study
from fixtures.old_stores import RUNS, make_folders
from studies import study_toml

FIXTURES = Path(__file__).parent / "fixtures"
OLD = [1, 2, 3]


def old_store(tmp_path: Path, version: int) -> str:
    shutil.copy(FIXTURES / f"store-schema-{version}.db", tmp_path / "runner.db")
    make_folders(tmp_path / "runs")
    return f"sqlite:///{tmp_path / 'runner.db'}"


def schema_version(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        v = conn.execute(sa.text("SELECT value FROM mr_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    return v


def trials(url: str) -> int:
    import optuna

    return len(optuna.load_study(study_name="tiny/vit_lr", storage=url).trials)


def test_the_fixtures_are_of_the_schemas_they_claim():
    for version in OLD:
        assert schema_version(f"sqlite:///{FIXTURES / f'store-schema-{version}.db'}") == str(version)


@pytest.mark.parametrize("version", OLD)
def test_an_older_store_is_upgraded_in_place_when_opened(tmp_path, version):
    from runner.records.store import SCHEMA_VERSION, Store

    url = old_store(tmp_path, version)
    before = Store.open(url, tmp_path / "runs")
    assert schema_version(url) == str(SCHEMA_VERSION)
    assert set(before.runs()) == set(RUNS)  # what it indexed is still there before the next ingest
    before.ingest(tmp_path / "runs")  # every folder is read again, filling in the new columns
    assert sorted((m["epoch"], m["name"]) for m in before.metrics(["run1"])) == [
        (1, "train_loss"), (1, "val_acc"), (2, "train_loss"), (2, "val_acc")]
    recs = before.runs()
    assert recs["run0"].state == "done" and recs["run0"].summary["test_acc"] == 0.9
    assert recs["run0"].code_hash == "feedbeef" and recs["run2"].state == "cancelled"
    assert trials(url) == 2


@pytest.mark.parametrize("version", OLD + [0])
def test_sync_rebuild_works_on_a_store_of_any_other_version_and_keeps_optuna(tmp_path, version):
    """Version 0 stands for one with no upgrade path: refused with the fix, which then works."""
    from runner.records.store import SCHEMA_VERSION

    url = old_store(tmp_path, version or 1)
    if version == 0:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE mr_meta SET value = '0' WHERE key = 'schema_version'"))
        engine.dispose()
        refused = run_cli("status", cwd=write_study(tmp_path, _study(tmp_path)).parent)
        assert refused.returncode == 2 and "runner sync --rebuild" in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1
    write_study(tmp_path, _study(tmp_path))
    out = run_cli("sync", "--rebuild", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{len(RUNS)} run(s) indexed in {url}"
    assert schema_version(url) == str(SCHEMA_VERSION) and trials(url) == 2
    status = run_cli("status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr


def test_a_store_of_a_newer_runner_says_so(tmp_path):
    url = old_store(tmp_path, 2)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE mr_meta SET value = '99' WHERE key = 'schema_version'"))
    engine.dispose()
    out = run_cli("status", cwd=write_study(tmp_path, _study(tmp_path)).parent)
    assert out.returncode == 2 and "a newer runner wrote it: upgrade runner" in out.stderr, out.stderr


def _study(tmp_path: Path) -> str:
    return study_toml().replace('[study]\n', '[study]\nstore = "sqlite:///runner.db"\nruns_dir = "runs"\n', 1)
