"""The store indexes run folders: idempotent ingestion, rebuild from folders, schema check, Optuna beside it.

Each test runs on a SQLite file and on a real PostgreSQL server (``store_url`` in conftest.py)."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from runner.errors import StoreError
from runner.records.runfolder import RunFolder
from runner.records.folder_rows import read_batch as _READ_BATCH
from runner.records.store import Store
from runner.states import State


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


def open_store(url, tmp_path):
    return Store.open(url, tmp_path / "runs", create=True)


def sql(url: str, statement: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def test_ingest_is_idempotent_and_skips_untouched_folders(store_url, tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "run0", done=True)
    make_run(runs, "run1", done=False)
    store = open_store(store_url, tmp_path)
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


def test_a_done_run_moved_back_to_training_is_seen_by_the_next_ingest(store_url, tmp_path):
    """Done folders are checked by their summary alone (one stat): lifting the done mark must show."""
    runs = tmp_path / "runs"
    f = make_run(runs, "run0", done=True)
    store = open_store(store_url, tmp_path)
    store.ingest(runs)
    f.supersede()
    a = f.start_attempt({})
    assert store.ingest(runs) == 1 and store.runs()["run0"].state == "running"
    f.finish(a, {"test_acc": 0.5})
    assert store.ingest(runs) == 1 and store.runs()["run0"].summary == {"test_acc": 0.5}
    assert store.ingest(runs) == 0


def test_an_ingest_between_the_summary_and_the_attempts_end_still_records_the_end(store_url, tmp_path):
    from runner.records.runfolder import write_json_atomic

    runs = tmp_path / "runs"
    f = make_run(runs, "run0", done=False)
    store = open_store(store_url, tmp_path)
    write_json_atomic(f.file("summary.json"), {"test_acc": 0.9})  # what finish() writes first
    store.ingest(runs)
    assert store.runs()["run0"].state == "done" and store.attempts("run0")[0]["ended_at"] is None
    f.end_attempt(1, "done")  # ... and then
    assert store.ingest(runs) == 1
    assert store.attempts("run0")[0]["status"] == "done" and store.runs()["run0"].finished_at is not None


def test_series_and_hardware_for_the_report(store_url, tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "run0", done=True, epochs=3)
    make_run(runs, "run1", done=True, epochs=2)
    store = open_store(store_url, tmp_path)
    store.ingest(runs)
    ids, epochs, values = store.series(["run0", "run1"], "val_acc")
    assert list(zip(ids, epochs, values)) == [("run0", 1, 0.1), ("run0", 2, 0.2), ("run0", 3, 0.3),
                                              ("run1", 1, 0.1), ("run1", 2, 0.2)]
    assert store.series(["run1"], "no_such_metric") == ([], [], [])
    assert store.hardware() == {"run0": ("cpu",), "run1": ("cpu",)}


def test_rebuild_recreates_the_index_from_folders(store_url, tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "run0", done=True)
    store = open_store(store_url, tmp_path)
    store.ingest(runs)
    before = store.runs()
    sql(store_url, "DELETE FROM mr_series")  # the index is damaged or lost
    sql(store_url, "DELETE FROM mr_attempts")
    sql(store_url, "DELETE FROM mr_runs")
    assert store.runs() == {}
    store.rebuild(runs)
    assert store.runs()["run0"].summary == before["run0"].summary
    assert len(store.metrics(["run0"])) == 6


def test_another_schema_version_is_refused_with_the_fix(store_url, tmp_path):
    open_store(store_url, tmp_path).engine.dispose()
    sql(store_url, "UPDATE mr_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="runner sync --rebuild"):
        open_store(store_url, tmp_path)


def test_readonly_open_creates_no_file(tmp_path):
    assert Store.open(f"sqlite:///{tmp_path / 'nope.db'}", tmp_path / "runs", create=False) is None
    assert not (tmp_path / "nope.db").exists()


def test_optuna_storage_shares_the_database(store_url, tmp_path):
    """Optuna keeps its own tables in the study's database; no name of ours collides with them."""
    optuna = pytest.importorskip("optuna")
    url = store_url
    store = open_store(store_url, tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    make_run(tmp_path / "runs", "run0", done=True)
    store.ingest(tmp_path / "runs")
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2
    assert store.runs()["run0"].state == "done"


def test_non_finite_numbers_survive_the_index(store_url, tmp_path):
    """A diverging run logs nan and inf; neither PostgreSQL's JSON nor SQLite's REAL holds nan, yet the
    run is indexed (a nan metric reads back as nan or as missing, never as a number)."""
    runs = tmp_path / "runs"
    f = make_run(runs, "run0", done=False, epochs=1)
    f.log_metrics(1, 2, 10, {"train_loss": float("nan"), "grad_norm": float("inf")})
    f.heartbeat(1, epoch=2, metrics={"train_loss": float("nan")})
    store = open_store(store_url, tmp_path)
    store.ingest(runs)
    rec = store.runs()["run0"]
    nan_or_none = lambda v: v is None or math.isnan(v)  # noqa: E731
    assert rec.state == "running" and nan_or_none(rec.progress["metrics"]["train_loss"])
    series = {(m["epoch"], m["name"]): m["value"] for m in store.metrics(["run0"])}
    assert nan_or_none(series[2, "train_loss"]) and series[2, "grad_norm"] == math.inf


def test_a_hand_edited_metrics_line_is_indexed_at_its_epoch(store_url, tmp_path):
    """A metrics line whose step or time is not a number (edited by hand, written by other code)
    is indexed at its epoch's step with no time, and the run's other points as they are."""
    runs = tmp_path / "runs"
    f = make_run(runs, "run0", done=False, epochs=1)
    with open(f.file("metrics.jsonl"), "a") as out:
        out.write('{"attempt": 1, "epoch": 2, "step": "x], [y", "time": "noon", "val_acc": 0.25}\n')
    store = open_store(store_url, tmp_path)
    store.ingest(runs)
    points = {(m["name"], m["epoch"]): (m["step"], m["value"], m["time"]) for m in store.metrics(["run0"])}
    assert points[("val_acc", 2)] == (2, 0.25, None)
    assert points[("val_acc", 1)][:2] == (5, 0.1) and points[("train_loss", 1)][:2] == (5, 1.0)


def test_a_study_whose_store_is_a_postgresql_server(postgres, tmp_path):
    """The whole loop with the index on a server: launch writes it, status and report read it."""
    import json

    from conftest import run_cli, write_study
    from studies import study_toml

    url = postgres.new_database()
    write_study(tmp_path, study_toml(epochs=1).replace('name = "tiny"', f'name = "tiny"\nstore = "{url}"'))
    launch = run_cli("launch", "--workers", "1", "--where", "architecture=vit", cwd=tmp_path)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    assert json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)["counts"] == {"done": 2, "missing": 2}
    assert "| vit |" in run_cli("report", cwd=tmp_path).stdout
    assert not (tmp_path / "results" / "runner.db").exists()
    assert len(Store.open(url, tmp_path / "results" / "runs").runs()) == 2


def test_bulk_ingest_across_batches_replaces_a_live_runs_rows_and_keeps_the_rest(store_url, tmp_path, monkeypatch):
    """Runs are indexed a batch a transaction (two here); a run in flight ingested after each epoch,
    as a launch's poll does with its ids, holds exactly its folder's rows each time: none twice."""
    import runner.records.store as store_module

    monkeypatch.setattr(store_module, "INGEST_BATCH", 2)
    runs = tmp_path / "runs"
    for i in range(5):
        make_run(runs, f"run{i}", done=True, epochs=i + 1)
    live = make_run(runs, "live9", done=False, epochs=1)
    store = open_store(store_url, tmp_path)
    assert store.ingest(runs) == 6
    for i in range(5):
        assert len(store.metrics([f"run{i}"])) == 2 * (i + 1)
    for epoch in (2, 3):
        live.log_metrics(1, epoch, epoch * 5, {"val_acc": epoch / 10, "train_loss": 1.0 / epoch})
        assert store.ingest(runs, ["live9"]) == 1
        rows = store.metrics(["live9"])
        assert sorted((m["epoch"], m["name"]) for m in rows) == sorted(
            (e, n) for e in range(1, epoch + 1) for n in ("train_loss", "val_acc"))
        assert len(store.attempts("live9")) == 1
    assert sorted(store.ids(state=State.DONE)) == [f"run{i}" for i in range(5)]
    assert list(store.runs(state=State.RUNNING)) == ["live9"]
    assert store.runs(["run3"])["run3"].summary == {"test_acc": 0.93, "params": 100}


def _index(store: Store, run_id: str) -> tuple[list, list, dict, dict | None]:
    """What the index holds of a run: its metric rows, its attempt rows, its record, its config."""
    metrics = sorted((m["step"], m["name"], m["epoch"], m["value"]) for m in store.metrics([run_id]))
    attempts = [(a["number"], a["status"], a["started_at"]) for a in store.attempts(run_id)]
    return metrics, attempts, store.runs([run_id])[run_id]._asdict(), store.config(run_id)


def test_a_run_in_flight_is_indexed_by_its_new_lines_exactly_as_a_whole_read_would(store_url, tmp_path, monkeypatch):
    """A launch's poll adds a run's new metric lines only (its attempts unchanged). Whatever the
    folder went through between two polls (a line half written, an attempt restarted from an
    earlier epoch), the index holds what a fresh index of the folder holds."""
    runs = tmp_path / "runs"
    live = make_run(runs, "live0", done=False, epochs=2)
    store = open_store(store_url, tmp_path)
    store.ingest(runs)
    checks = iter(range(100))
    whole_reads = []
    whole = RunFolder.metrics
    monkeypatch.setattr(RunFolder, "metrics", lambda self: whole_reads.append(1) or whole(self))

    def check(*, read_whole: bool = False) -> None:
        whole_reads.clear()
        assert store.ingest(runs, ["live0"]) == 1
        assert bool(whole_reads) == read_whole  # the new lines alone, unless an attempt began or ended
        fresh = Store.open(f"sqlite:///{tmp_path / f'fresh{next(checks)}.db'}", runs)
        fresh.ingest(runs)
        assert _index(store, "live0") == _index(fresh, "live0")
        fresh.engine.dispose()

    metrics_file = live.file("metrics.jsonl")
    live.log_metrics(1, 3, 15, {"val_acc": 0.3, "train_loss": 1 / 3})
    live.heartbeat(1, epoch=3, epochs=8)
    check()
    with open(metrics_file, "a") as f:  # the worker is mid-way through writing epoch 4's line
        f.write('{"attempt": 1, "epoch": 4, "step": 20, "val_')
    check()
    with open(metrics_file, "a") as f:
        f.write('acc": 0.4, "train_loss": 0.25}\n')
    live.log_metrics(1, 5, 25, {"val_acc": 0.5, "train_loss": 0.2})
    check()
    assert len(store.metrics(["live0"])) == 10
    # the worker was killed; a new attempt resumes from epoch 2's checkpoint: once it is indexed,
    # its epochs 3.. replace the abandoned attempt's
    a = live.start_attempt({"git": {"commit": "c0ffee", "dirty": False}})
    check(read_whole=True)
    live.log_metrics(a, 3, 15, {"val_acc": 0.35, "train_loss": 0.3})
    check()
    assert sorted(m["epoch"] for m in store.metrics(["live0"]) if m["name"] == "val_acc") == [1, 2, 3]
    live.log_metrics(a, 4, 20, {"val_acc": 0.45, "train_loss": 0.2})
    live.finish(a, {"test_acc": 0.9})
    check(read_whole=True)
    assert store.runs(["live0"])["live0"].state == "done"


def test_folders_read_ahead_by_forked_processes_index_as_read_in_turn(store_url, tmp_path, monkeypatch):
    """A sync of many batches has its folders read by forked processes while it writes: the index
    is the one a reading in turn makes, batch for batch, whatever their number."""
    import os

    import runner.records.folder_rows as folder_rows
    import runner.records.store as store_module

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: folders are read in turn")
    monkeypatch.setattr(store_module, "INGEST_BATCH", 2)
    runs = tmp_path / "runs"
    for i in range(9):  # five batches, one of them short
        make_run(runs, f"run{i}", done=i % 3 != 0, epochs=i % 4 + 1)
    pids = tmp_path / "pids"
    monkeypatch.setenv("TEST_READ_PIDS", str(pids))
    monkeypatch.setattr(folder_rows, "read_batch", _read_batch_noting_pid)

    def index(readers: int, url: str) -> dict:
        monkeypatch.setattr(folder_rows, "MAX_READERS", readers)
        store = Store.open(url, runs)
        assert store.ingest(runs) == 9
        out = {rid: _index(store, rid) for rid in sorted(store.ids())}
        store.engine.dispose()
        return out

    ahead = index(1, store_url)
    readers = pids.read_text().split()
    assert len(readers) == 5 and str(os.getpid()) not in readers  # read in a forked process
    pids.unlink()
    in_turn = index(0, f"sqlite:///{tmp_path / 'in_turn.db'}")
    assert pids.read_text().split() == [str(os.getpid())] * 5
    assert ahead == in_turn and len(ahead) == 9


def _read_batch_noting_pid(batch):
    """``folder_rows.read_batch``, noting which process called it (a reader's calls are not this one's)."""
    import os

    with open(os.environ["TEST_READ_PIDS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return _READ_BATCH(batch)
