"""What the terminal shows is the text it was given: reasons quote library errors and paths in
square brackets (gloo's ``[/__w/pytorch/.../pair.cc:545] Read error [127.0.0.1]:13714``), which
rich would read as markup. One such reason once crashed a launcher in the middle of its runs."""

from __future__ import annotations

import io

import pytest

from runner.cli import render
from runner.plan.runs import Run
from runner.launch.scheduler import LaunchResult

REASON = ("RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] "
          "Read error [127.0.0.1]:13714: Connection reset by peer [bold]")
RUN = Run("abc123", "cell1", "vit[red]/digits/s0", "vit", "digits", 0, ("main",), {"train": {"epochs": 3}})


@pytest.fixture
def plain(monkeypatch):
    """The module's consoles, wide enough that nothing wraps."""
    for name in ("console", "err_console"):
        monkeypatch.setattr(getattr(render, name), "width", 400)


def test_launch_lines_print_reasons_and_labels_verbatim(plain, capsys):
    display = render.LaunchDisplay(total=1)  # not a terminal here: one line per event
    display.started(RUN, type("Slot", (), {"name": "cpu0"})())
    display.finished(RUN, "failed", None, REASON)
    display.message(f"lost {RUN.label}: {REASON}; retrying (1/2)")
    render.launch_lines(LaunchResult(selected=1, failed=1, failures=[(RUN.label, "failed", REASON)]))
    out, err = capsys.readouterr()
    assert f"start  {RUN.label} abc123 on cpu0" in out
    assert f"{RUN.label} abc123 {REASON}" in out
    assert f"lost {RUN.label}: {REASON}; retrying (1/2)" in err
    assert f"failed {RUN.label}: {REASON}" in err


def test_a_tuning_trial_line_shows_its_objective_never_a_test_metric(plain, capsys):
    record = type("Record", (), {"summary": {"test_acc": 0.9123, "best_val_acc": 0.8765, "train_time_s": 3}})()
    display = render.LaunchDisplay(total=1, metric="best_val_acc")
    display.finished(RUN, "done", record, None)
    out = capsys.readouterr().out
    assert "best_val_acc=0.8765" in out and "test_acc" not in out and "0.9123" not in out


def test_status_shows_a_bracketed_reason_whole(plain, capsys):
    entry = {"id": "abc123", "label": RUN.label, "state": "failed", "reason": REASON}
    render.status_view("study", {"counts": {"failed": 1}, "runs": [entry]})
    out = capsys.readouterr().out
    assert RUN.label in out and REASON in out


def test_status_reads_at_80_columns(monkeypatch):
    """Each run row fits an 80-column terminal, label first, its id whole; a label too long for its
    column folds onto the next line, never cut."""
    from rich.console import Console

    monkeypatch.setattr(render, "console", Console(width=80, record=True, file=io.StringIO(), highlight=False,
                                                   soft_wrap=True))
    long_label = "conv_attn_learned_content/cifar100/s2"
    runs = [
        {"id": "a1b2c3d4e5f6", "label": long_label, "state": "running",
         "progress": {"epoch": 3, "epochs": 300, "metrics": {"val_acc": 0.41, "train_loss": 1.23, "epoch_time_s": 30}}},
        {"id": "b1b2c3d4e5f6", "label": "vit/digits/s0", "state": "failed", "reason": REASON},
        {"id": "c1b2c3d4e5f6", "label": "cnn/digits/s1", "state": "lost", "reason": "no heartbeat for 600 s",
         "job": {"id": "123_4", "state": "FAILED"}},
        {"id": "d1b2c3d4e5f6", "label": "cnn/digits/s0", "state": "done",
         "summary": {"test_acc": 0.9123, "best_val_acc": 0.92, "params": 21345678, "train_time_s": 12345}},
        {"id": "e1b2c3d4e5f6", "label": "vit/cifar10/s1", "state": "queued", "job": {"id": "123_5", "state": "PENDING"}},
    ]
    render.status_view("study", {"counts": {"running": 1, "failed": 1, "lost": 1, "done": 1, "queued": 1},
                                 "runs": runs})
    lines = render.console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(l for l in lines if len(l) > 80)
    for run in runs:
        rows = [l for l in lines if run["id"] in l]
        assert rows, f"{run['id']} not shown whole:\n" + "\n".join(lines)
        for row in rows:
            assert row.startswith(run["label"][:20]) and row.index(run["label"][:20]) < row.index(run["id"]), row
    i = next(i for i, line in enumerate(lines) if runs[0]["id"] in line)
    assert lines[i].split()[0] + lines[i + 1].split()[0] == long_label  # folded, every character kept
    assert "…" not in "\n".join(lines)
