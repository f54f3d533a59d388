"""The store indexes run folders: idempotent ingestion, rebuild from folders, schema check, Optuna beside it."""

from __future__ import annotations

import sqlite3

import pytest

from runner.errors import StoreError
from runner.runfolder import RunFolder
from runner.store import Store


def make_run(runs_dir, rid, *, done: bool, epochs=3):
    f = RunFolder(runs_dir / rid)
    f.create({"id": rid, "cell": "cell" + rid[-1], "label": f"vit/digits/s{rid[-1]}", "matrices": ["main"],
              "config": {"seed": 0}})
    a = f.start_attempt({"git": {"commit": "c0ffee", "dirty": False}, "host": {"python": "3.11"},
                         "torch": {"torch": "2.14.1", "device": "cpu"}, "command": "runner launch"})
    for e in range(1, epochs + 1):
        f.log_metrics(a, e, e * 5, {"val_acc": e / 10, "train_loss": 1.0 / e})
    if done:
        f.finish(a, {"test_acc": 0.93, "params": 100})
    return f


def open_store(tmp_path):
    return Store.open(f"sqlite:///{tmp_path / 'runner.db'}", tmp_path / "runs", create=True)


def test_ingest_is_idempotent_and_skips_untouched_folders(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "run0", done=True)
    make_run(runs, "run1", done=False)
    store = open_store(tmp_path)
    assert store.ingest(runs) == 2
    assert store.ingest(runs) == 1  # the running one is always looked at, the done one skipped
    recs = store.runs()
    assert recs["run0"].state == "done" and recs["run0"].summary == {"test_acc": 0.93, "params": 100}
    assert recs["run0"].git_commit == "c0ffee"
    assert recs["run1"].state == "running"
    series = store.metrics(["run0"])
    assert len(series) == 6 and {m["name"] for m in series} == {"val_acc", "train_loss"}
    att = store.attempts("run0")
    assert att[0]["git_commit"] == "c0ffee" and att[0]["torch"] == "2.14.1" and att[0]["command"] == "runner launch"


def test_rebuild_recreates_the_index_from_folders(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "run0", done=True)
    store = open_store(tmp_path)
    store.ingest(runs)
    before = store.runs()
    with sqlite3.connect(tmp_path / "runner.db") as db:  # the index is damaged or lost
        db.execute("DELETE FROM mr_metrics")
        db.execute("DELETE FROM mr_runs")
    assert store.runs() == {}
    store.rebuild(runs)
    assert store.runs()["run0"].summary == before["run0"].summary
    assert len(store.metrics(["run0"])) == 6


def test_another_schema_version_is_refused_with_the_fix(tmp_path):
    open_store(tmp_path).engine.dispose()
    with sqlite3.connect(tmp_path / "runner.db") as db:
        db.execute("UPDATE mr_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="runner sync --rebuild"):
        open_store(tmp_path)


def test_readonly_open_creates_no_file(tmp_path):
    assert Store.open(f"sqlite:///{tmp_path / 'nope.db'}", tmp_path / "runs", create=False) is None
    assert not (tmp_path / "nope.db").exists()


def test_optuna_storage_shares_the_database(tmp_path):
    """Optuna keeps its own tables in the study's database; no name of ours collides with them."""
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    store = open_store(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    make_run(tmp_path / "runs", "run0", done=True)
    store.ingest(tmp_path / "runs")
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2
    assert store.runs()["run0"].state == "done"
