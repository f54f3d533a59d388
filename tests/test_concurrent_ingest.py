"""16 workers write their run folders while `runner status` processes and an ingest loop read
them into one SQLite file: every metric line lands exactly once and nobody sees
`database is locked`.

The writers are real processes using the worker's own RunFolder calls; they skip the training
(what is under test is the journal and its index, and training 16 models would only slow it)."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import run_cli, write_study
from runner import commands
from runner.launch.scheduler import run_json
from runner.records.store import Store
from studies import study_toml

EPOCHS = 200
# After its epochs a writer keeps beating (its folder keeps changing) until the test has seen
# enough reads and ingests, however slow the machine: a fixed duration made the test flaky.
WRITER = """
import os, random, sys, time
from runner.records.runfolder import RunFolder
folder, epochs, release = RunFolder(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
attempt = folder.start_attempt({})
for e in range(1, epochs + 1):
    folder.log_metrics(attempt, e, 10 * e, {"train_loss": 1.0 / e, "val_acc": e / epochs, "lr": 0.1})
    folder.heartbeat(attempt, epoch=e, epochs=epochs)
    time.sleep(random.random() * 0.03)
deadline = time.monotonic() + 300
while not os.path.exists(release) and time.monotonic() < deadline:
    folder.heartbeat(attempt, epoch=epochs, epochs=epochs)
    time.sleep(0.05)
folder.finish(attempt, {"test_acc": 0.5})
"""


def test_sixteen_writers_and_concurrent_readers_lose_nothing_and_never_lock(tmp_path):
    write_study(tmp_path, study_toml(seeds=range(8), epochs=1))
    sel = commands.load(tmp_path / "experiments.toml")
    assert len(sel.runs) == 16
    for run in sel.runs:
        commands.RunFolder(sel.study.runs_dir / run.id).create(run_json(run, sel.study))
    assert run_cli("sync", cwd=tmp_path).returncode == 0

    release = tmp_path / "release"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(sel.study.runs_dir / r.id), str(EPOCHS), str(release)])
               for r in sel.runs]
    readers: list[subprocess.Popen] = []
    store = Store.open(sel.study.store, sel.study.runs_dir)
    ingests = read = 0
    while any(w.poll() is None for w in writers):
        still = [p for p in readers if p.poll() is None]
        read += sum(_check_reader(p) for p in readers if p not in still)
        readers = still
        while len(readers) < 3:
            readers.append(subprocess.Popen([sys.executable, "-m", "runner", "status", "--json"], cwd=tmp_path,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        store.ingest(sel.study.runs_dir)
        ingests += 1
        if ingests > 10 and read >= 6:
            release.touch()
        time.sleep(0.01)
    assert all(w.wait() == 0 for w in writers)
    for p in readers:
        p.wait(timeout=120)
    read += sum(_check_reader(p) for p in readers)
    assert ingests > 10 and read >= 6, (ingests, read)  # the index was read and written while the folders changed

    store.ingest(sel.study.runs_dir)
    ids = [r.id for r in sel.runs]
    assert {rec.state for rec in store.runs(ids).values()} == {"done"}
    rows = store.metrics(ids)
    keys = [(m["run_id"], m["name"], m["epoch"]) for m in rows]
    assert len(keys) == len(set(keys)) == 16 * EPOCHS * 3
    assert all(m["value"] == 1.0 / m["epoch"] for m in rows if m["name"] == "train_loss")


def _check_reader(p: subprocess.Popen) -> int:
    """A finished `runner status` succeeded and never met a locked database."""
    err = p.stderr.read()
    assert p.returncode == 0 and "locked" not in err, err
    return 1
