"""What the terminal shows is the text it was given: reasons quote library errors and paths in
square brackets (gloo's ``[/__w/pytorch/.../pair.cc:545] Read error [127.0.0.1]:13714``), which
rich would read as markup. One such reason once crashed a launcher in the middle of its runs."""

from __future__ import annotations

import pytest

from runner.cli import render
from runner.plan.expand import Run
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


def test_status_shows_a_bracketed_reason_whole(plain, capsys):
    entry = {"id": "abc123", "label": RUN.label, "state": "failed", "reason": REASON}
    render.status_view("study", {"counts": {"failed": 1}, "runs": [entry]})
    out = capsys.readouterr().out
    assert RUN.label in out and REASON in out
