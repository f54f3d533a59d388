"""Local backend: long-lived worker subprocesses, one per slot (a GPU, a share of a GPU, or CPU).

Each worker is ``python -m runner.train.worker`` pinned with ``CUDA_VISIBLE_DEVICES``,
fed run folders on its stdin and answering with JSON events on a private pipe
(its stdout and stderr go to a log file, so prints from user code cannot corrupt
the protocol). Workers get their own session: a Ctrl-C in the terminal reaches
only the launcher, which stops them in order.

This is not a ``Backend`` (``runner/backends/base.py``): a worker is the launcher's own child,
driven run by run by the dispatcher (``runner/launch/dispatch.py``), and says at once over its
pipe what happens; there are no job handles to poll. What a worker may write is the same as
for a SLURM task: its runs' folders, never the store.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runner.errors import BackendError
from runner.records.provenance import COMMAND_ENV, command_line


@dataclass(frozen=True)
class Slot:
    name: str  # "cpu0", "gpu1", "gpu1.b"
    device: str  # "cpu" or "cuda"
    gpu: str | None
    threads: int | None


def visible_gpus() -> int:
    """Number of NVIDIA GPUs on this machine, without importing torch."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def make_slots(*, gpus: str | None, per_gpu: int, workers: int | None) -> list[Slot]:
    """``--gpus 4`` / ``--gpus 0,2,3`` with ``--per-gpu K``, or ``--workers N`` CPU workers."""
    if per_gpu < 1:
        raise BackendError(f"--per-gpu {per_gpu}: must be at least 1")
    if gpus is None:
        # one single-threaded worker per core beats fewer multi-threaded ones for the small models run on CPUs
        n = workers if workers is not None else max(1, min(8, os.cpu_count() or 1))
        if n < 1:
            raise BackendError(f"--workers {n}: must be at least 1")
        threads = max(1, (os.cpu_count() or 1) // n)
        return [Slot(f"cpu{i}", "cpu", None, threads) for i in range(n)]
    text = gpus.strip()
    if text.isdigit():
        ids = [str(i) for i in range(int(text))]
    else:
        ids = [t.strip() for t in text.split(",") if t.strip()]
        if not ids or not all(i.isdigit() for i in ids):
            raise BackendError(f"--gpus {gpus}: expected a count (4) or a list of GPU indices (0,2,3)")
    if not ids:
        raise BackendError("--gpus 0 means no GPU; use --workers N for CPU workers")
    have = visible_gpus()
    missing = [i for i in ids if int(i) >= have]
    if missing:
        raise BackendError(f"--gpus {gpus}: this machine has {have} NVIDIA GPU(s), so no GPU {', '.join(missing)}; "
                           "use --workers N to run on the CPU")
    threads = max(1, (os.cpu_count() or 1) // (len(ids) * per_gpu))
    return [Slot(f"gpu{g}" + (f".{k}" if per_gpu > 1 else ""), "cuda", g, threads)
            for g in ids for k in range(per_gpu)]


class Worker:
    """One worker subprocess and its control pipe."""

    def __init__(self, slot: Slot, *, study_dir: Path, log_dir: Path, number: int, max_runs: int | None = None):
        self.slot = slot
        self.started = False  # True once it said "ready": torch imported, device usable
        self.hung_for: float | None = None  # seconds without heartbeat when the launcher killed it
        self.sent_at = 0.0  # when it was handed its current run (wall clock, as in attempts.jsonl)
        self.send_failed = False  # it had died when handed its run: the run never reached it
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, **{COMMAND_ENV: command_line(), "PYTHONUNBUFFERED": "1"})
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{slot.name}-{number}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runner.train.worker", "--study-dir", str(study_dir), "--device", slot.device,
                 "--control-fd", str(write_fd)] + (["--threads", str(slot.threads)] if slot.threads else [])
                + (["--max-runs", str(max_runs)] if max_runs else []),
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,), env=env,
                start_new_session=True, text=True,
            )
        os.close(write_fd)
        self.control = os.fdopen(read_fd, "rb", buffering=0)
        self._buffer = b""

    def fileno(self) -> int:
        return self.control.fileno()

    def send(self, run_dir: Path, helpers: list[dict] | None = None) -> None:
        """Hand over a run; ``helpers``: the devices of a distributed run's other ranks."""
        self.sent_at = time.time()
        line = json.dumps({"run": str(run_dir), "helpers": helpers}) if helpers else str(run_dir)
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.send_failed = True  # it died since it was ready: its end of file comes next

    def events(self) -> list[dict]:
        """Events available now (call when the selector says the pipe is readable)."""
        chunk = self.control.read(65536)
        if not chunk:
            return [{"event": "eof"}]
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close_input(self) -> None:
        """No more work: the worker exits when it next waits for a task."""
        self._close_stdin()

    def _close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class WorkerPool:
    """The workers of one launch, multiplexed with a selector."""

    def __init__(self, *, study_dir: Path, log_dir: Path):
        self.study_dir, self.log_dir = study_dir, log_dir
        self.workers: list[Worker] = []
        self.selector = selectors.DefaultSelector()
        self._started = 0

    def start(self, slot: Slot, max_runs: int | None = None) -> Worker:
        """A new worker on ``slot``; with ``max_runs`` it exits after that many runs."""
        self._started += 1
        w = Worker(slot, study_dir=self.study_dir, log_dir=self.log_dir, number=self._started, max_runs=max_runs)
        self.workers.append(w)
        self.selector.register(w.control, selectors.EVENT_READ, w)
        return w

    def retire(self, w: Worker) -> None:
        self.selector.unregister(w.control)
        w.control.close()
        w._close_stdin()
        self.workers.remove(w)

    def poll(self, timeout: float) -> list[tuple[Worker, dict]]:
        out = []
        for key, _ in self.selector.select(timeout):
            w = key.data
            out.extend((w, e) for e in w.events())
        return out

    def shutdown(self, grace_s: float) -> None:
        """SIGTERM everyone (runs stop at the next batch), then SIGKILL whoever is left."""
        for w in self.workers:
            w.terminate()
        deadline = time.monotonic() + grace_s
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.kill()
                w.proc.wait()
