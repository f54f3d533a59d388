"""The run folder is the journal: atomic files, torn lines tolerated, state derived from files alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from runner.errors import BackendError
from runner.records.runfolder import RunFolder, heartbeat_every_s, lost_after_s, read_jsonl, write_json_atomic

RUN = {"id": "abc", "cell": "c", "label": "vit/digits/s0", "matrices": ["main"], "config": {"seed": 0}}


def folder(tmp_path) -> RunFolder:
    f = RunFolder(tmp_path / "abc")
    f.create(RUN)
    return f


def test_states_follow_the_files(tmp_path):
    f = folder(tmp_path)
    assert f.read().state == "planned"
    a = f.start_attempt({"git": {"commit": "x"}})
    assert a == 1 and f.read().state == "running"
    f.fail(a, "ValueError: boom", "Traceback ...")
    s = f.read()
    assert s.state == "failed" and s.reason == "ValueError: boom"
    # a new attempt clears the failed mark but keeps the history
    b = f.start_attempt({})
    assert b == 2 and f.read().state == "running"
    f.end_attempt(b, "interrupted", "stopped")
    assert f.read().state == "cancelled"
    c = f.start_attempt({})
    f.finish(c, {"test_acc": 0.9})
    s = f.read()
    assert s.state == "done" and s.summary == {"test_acc": 0.9}
    assert [x["status"] for x in s.attempts] == ["failed", "interrupted", "done"]


def test_a_dead_worker_on_this_host_is_lost_at_once(tmp_path):
    f = folder(tmp_path)
    child = subprocess.Popen([sys.executable, "-c",
                              f"from runner.records.runfolder import RunFolder; RunFolder({str(f.path)!r}).start_attempt({{}})"])
    child.wait()
    s = f.read()
    assert s.state == "lost" and "killed or crashed" in s.reason


def test_a_silent_heartbeat_means_lost(tmp_path):
    f = folder(tmp_path)
    a = f.start_attempt({})
    f.heartbeat(a, epoch=1)
    assert f.read().state == "running"
    assert f.read(now=time.time() + lost_after_s() + 1).state == "lost"


def test_cancel_requests_and_lost_marks(tmp_path):
    f = folder(tmp_path)
    f.request_cancel({"pid": 1})
    s = f.read()
    assert s.state == "cancelled" and s.reason == "cancelled before it started"
    f.clear_cancel()  # what the next launch does
    assert f.read().state == "planned"
    a = f.start_attempt({})
    f.request_cancel({"pid": 1})
    assert f.read().state == "running"  # until the worker stops it
    f.end_attempt(a, "cancelled", "cancelled with `runner cancel`")
    assert f.read().state == "cancelled"
    f.clear_cancel()
    b = f.start_attempt({})
    f.mark_lost(b, "worker process died (killed by signal 9)")
    s = f.read()
    assert s.state == "lost" and "signal 9" in s.reason
    assert [x["status"] for x in s.attempts] == ["cancelled", "lost"]


def test_a_dead_worker_with_a_cancel_request_counts_as_cancelled(tmp_path):
    f = folder(tmp_path)
    f.start_attempt({})
    f.request_cancel({"pid": 1})
    assert f.read(now=time.time() + lost_after_s() + 1).state == "cancelled"


def test_lost_after_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RUNNER_LOST_AFTER_S", "8")
    assert lost_after_s() == 8 and heartbeat_every_s() == 2
    monkeypatch.delenv("RUNNER_LOST_AFTER_S")
    assert lost_after_s() == 90 and heartbeat_every_s() == 5
    monkeypatch.setenv("RUNNER_LOST_AFTER_S", "soon")
    with pytest.raises(BackendError, match="RUNNER_LOST_AFTER_S=soon: expected a number of seconds"):
        lost_after_s()


def test_torn_last_line_is_ignored(tmp_path):
    f = folder(tmp_path)
    f.log_metrics(1, 1, 10, {"val_acc": 0.5})
    with open(f.file("metrics.jsonl"), "a") as out:
        out.write('{"attempt": 1, "epoch": 2, "val_a')  # the process died mid-write
    assert [m["epoch"] for m in read_jsonl(f.file("metrics.jsonl"))] == [1]


def test_metrics_of_a_restarted_attempt_replace_the_abandoned_ones(tmp_path):
    f = folder(tmp_path)
    for e in (1, 2, 3):
        f.log_metrics(1, e, e * 10, {"val_acc": 0.1 * e})
    for e in (1, 2):
        f.log_metrics(2, e, e * 10, {"val_acc": 0.5 + 0.1 * e})
    assert [(m["epoch"], m["attempt"]) for m in f.metrics()] == [(1, 2), (2, 2)]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"v": 1})

    class Unserializable:
        pass

    try:
        write_json_atomic(target, {"v": Unserializable()})
    except TypeError:
        pass
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_signature_changes_with_any_journal_file(tmp_path):
    f = folder(tmp_path)
    s1 = f.signature()
    time.sleep(0.01)
    f.start_attempt({})
    assert f.signature() != s1
    assert os.path.exists(f.file("attempts.jsonl"))
