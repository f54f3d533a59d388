"""One run over several processes (``gpus_per_run = N``): DistributedDataParallel, torchrun-style.

The worker that takes the run is rank 0: it opens a TCP rendezvous store on localhost (port
chosen by the system, so two runs never collide), starts ranks 1..N-1 as ``python -m
runner.train.rank`` processes, and trains alongside them. Each process has one device: locally
each rank is pinned to its slot's GPU by ``CUDA_VISIBLE_DEVICES``; in a SLURM task that holds
N GPUs, rank r takes ``cuda:r``. ``nccl`` joins processes on distinct GPUs, ``gloo`` every
other case (CPU processes, or ranks sharing one GPU with ``--per-gpu``).

What the loop relies on (``runner/train/loop.py``): every rank sees its part of the same global
batches (``datasets.batches.shard_bounds``), gradients are averaged, and every decision
(stop, best epoch, early stop) is taken on values all ranks agree on, so they step in lockstep.
Rank 0 alone writes the run folder; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from runner.records.runfolder import read_json

HOST = "127.0.0.1"
GRACE_S = 15.0  # how long rank 0 may take to notice on its own that another rank failed
EXIT_RANK_LOST = 76  # rank 0's worker exits so when another rank was killed: the run is lost, retried
KILLED_FROM_OUTSIDE = {signal.SIGKILL, signal.SIGTERM, signal.SIGHUP}  # a crash (SIGSEGV, SIGABRT) fails the run


def timeout_s() -> float:
    """How long a rank waits for the others (rendezvous, a collective): ``RUNNER_DDP_TIMEOUT_S``."""
    return float(os.environ.get("RUNNER_DDP_TIMEOUT_S", "600"))


@dataclass
class Ranks:
    """This process's place in a run: rank, world size, and the collectives the loop needs."""

    rank: int = 0
    world: int = 1
    backend: str | None = None  # None: one process, no process group
    helpers: list = field(default_factory=list)  # rank 0: the Popen of ranks 1..N-1
    run_dir: Path | None = None
    store: object = None  # rank 0: the rendezvous server, alive for the run
    ending: threading.Event = field(default_factory=threading.Event)  # rank 0: helpers may exit now

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sums(self, values: list[float], device) -> list[float]:
        """Each value summed over the ranks."""
        if self.world == 1:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool, device) -> bool:
        """True on every rank when it is true on one (a stop request reaches them all at the same step)."""
        return flag if self.world == 1 else self.sums([float(flag)], device)[0] > 0

    def sync_buffers(self, *modules) -> None:
        """Rank 0's buffers (BatchNorm statistics, which each rank updates on its own batches) on
        every rank, so that evaluation and the saved weights are one model's."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for m in modules:
            for b in m.buffers():
                dist.broadcast(b, 0)

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (the RNG states a checkpoint keeps)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def backend_for(places: list[tuple[str | None, str]]) -> str:
    """nccl when every rank has a GPU of its own, gloo otherwise. ``places``: each rank's
    (CUDA_VISIBLE_DEVICES, device): ("0", "cuda:0") and ("1", "cuda:0") are two GPUs, as are
    ("0,1", "cuda:0") and ("0,1", "cuda:1"); two ("0", "cuda:0") share one."""
    if all(device.startswith("cuda") for _, device in places) and len(set(places)) == len(places):
        return "nccl"
    return "gloo"


def join(rank: int, world: int, port: int, backend: str, store=None):
    """Join the process group (rank 0 passes the store it opened)."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s())
    if store is None:
        store = dist.TCPStore(HOST, port, world, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


def start(run_dir: Path, world: int, device: str, helpers: list[dict], threads: int | None,
          on_failure: Callable[[str], None], on_lost: Callable[[str], None] | None = None) -> Ranks:
    """Rank 0: open the rendezvous, start ranks 1..N-1, join the group. ``helpers``: for each other
    rank ``{"gpu": CUDA_VISIBLE_DEVICES or None, "device": "cuda:0" | "cuda:r" | "cpu", "threads": n}``.
    When another rank ends and rank 0 is stuck: ``on_failure(reason)`` records the run failed,
    ``on_lost(reason)`` (a batch worker, whose launcher is not there to see it exit) lost."""
    import torch.distributed as dist

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    backend = backend_for([(visible, device)] + [(h.get("gpu") or visible, h["device"]) for h in helpers])
    store = dist.TCPStore(HOST, 0, world, is_master=True, timeout=datetime.timedelta(seconds=timeout_s()),
                          wait_for_workers=False)
    procs = []
    for r, h in enumerate(helpers, start=1):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if h.get("gpu") is not None:
            env["CUDA_VISIBLE_DEVICES"] = h["gpu"]
        error_file(run_dir, r).unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "runner.train.rank", "--run-dir", str(run_dir), "--rank", str(r), "--world", str(world),
               "--port", str(store.port), "--backend", backend, "--device", h["device"], "--parent", str(os.getpid())]
        if h.get("threads") or threads:
            cmd += ["--threads", str(h.get("threads") or threads)]
        log = open(Path(run_dir) / f"rank-{r}.log", "ab")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
        log.close()
    ranks = Ranks(0, world, backend, procs, run_dir=Path(run_dir), store=store)
    _watch_helpers(ranks, on_failure, on_lost)
    try:
        join(0, world, store.port, backend, store)
    except BaseException:  # no group to leave: end the ranks started, and their watcher, here
        ranks.ending.set()
        for p in procs:
            p.kill()
            p.wait()
        raise
    return ranks


def _watch_helpers(ranks: Ranks, on_failure: Callable[[str], None], on_lost: Callable[[str], None] | None) -> None:
    """Another rank that ends early leaves rank 0 in a collective: gloo raises there soon (the
    worker's handler then records why, and sets ``ranks.ending``), NCCL may wait out its timeout.
    So after a grace period rank 0 exits: a rank that failed fails the run, one killed from outside
    makes it lost, and the launcher retries it from its checkpoint."""

    def watch() -> None:
        while not ranks.ending.is_set():
            for r, p in enumerate(ranks.helpers, start=1):
                code = p.poll()
                if code not in (None, 0) and not ranks.ending.wait(GRACE_S):
                    killed = killed_rank(ranks)
                    if killed is None:
                        on_failure(failure_of(ranks) or f"rank {r} exited with code {code}")
                    elif on_lost is not None:
                        on_lost(killed)
                    exit_lost(killed or f"rank {r} failed")
            if all(p.poll() == 0 for p in ranks.helpers):
                return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def exit_lost(why: str) -> None:
    """Rank 0's worker exits with the attempt left open: its launcher counts the run lost and
    retries it from its checkpoint (the only way out of a collective that never returns)."""
    print(f"{why}; stopping rank 0", file=sys.stderr, flush=True)
    os._exit(EXIT_RANK_LOST)


def let_ranks_exit(ranks: Ranks, wait_s: float) -> None:
    """Give the other ranks ``wait_s`` to end: rank 0 may see a collective break before the rank
    that broke it has exited (or written why)."""
    deadline = time.monotonic() + wait_s
    for p in ranks.helpers:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def killed_rank(ranks: Ranks) -> str | None:
    """A rank killed from outside (kill -9, the OOM killer, a shutdown): the run was lost, not
    broken. Asked before ``failure_of``: the ranks it left in a collective fail too and write
    their own error files."""
    for r, p in enumerate(ranks.helpers, start=1):
        code = p.poll()
        if code is not None and code < 0 and -code in KILLED_FROM_OUTSIDE:
            return f"rank {r} was killed by {_signal_name(-code)} (its log: rank-{r}.log)"
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time signals have no name
        return f"signal {number}"


def error_file(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank-{rank}.error.json"


def failure_of(ranks: Ranks) -> str | None:
    """Why another rank of the run failed: the first error file written (the ranks that failure
    leaves in a collective write theirs after it), else a rank that crashed or exited non-zero."""
    found = []
    for r in range(1, len(ranks.helpers) + 1):
        path = error_file(ranks.run_dir, r) if ranks.run_dir else None
        info = read_json(path) if path else None
        if info:
            found.append((path.stat().st_mtime, r, info["reason"]))
    if found:
        _, r, reason = min(found)
        return f"rank {r}: {reason}"
    for r, p in enumerate(ranks.helpers, start=1):
        code = p.poll()
        if code is not None and code < 0:
            return f"rank {r} crashed with {_signal_name(-code)} (its log: rank-{r}.log)"
        if code:
            return f"rank {r} exited with code {code} without saying why (its log: rank-{r}.log)"
    return None


def finish(ranks: Ranks, *, failed: bool) -> None:
    """Leave the group; rank 0 waits for the other ranks (and ends them if the run failed)."""
    import torch.distributed as dist

    if ranks.world == 1:
        return
    if failed:
        ranks.ending.set()
    if dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()
    ranks.ending.set()
    for p in ranks.helpers:
        try:
            p.wait(timeout=2 if failed else 60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def default_helpers(world: int, device: str, threads: int | None) -> list[dict]:
    """Ranks 1..N-1 when no launcher assigned slots (a SLURM task): GPUs of this process by index, or CPU."""
    if device.startswith("cuda"):
        import torch

        have = torch.cuda.device_count()
        if have < world:
            raise RuntimeError(f"gpus_per_run = {world}, but this process sees {have} GPU(s); "
                               f"ask for {world} (--gpus-per-task {world})")
        return [{"gpu": None, "device": f"cuda:{r}", "threads": threads} for r in range(1, world)]
    return [{"gpu": None, "device": "cpu", "threads": threads} for _ in range(1, world)]
