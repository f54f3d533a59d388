"""Rank 1..N-1 of a distributed run (``python -m runner.train.rank``), started by rank 0's worker.

It trains the run's config alongside rank 0 (``runner/train/distributed.py``) and writes nothing to
the run folder but its own log; it resumes from the run's checkpoint like rank 0. It exits when
the run ends, when rank 0's process is gone, or at SIGTERM (at the same step as the others).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path


def _exit_with_parent(parent: int) -> None:
    """A rank whose worker died (kill -9) must not wait in a collective forever."""
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(75)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="runner.train.rank", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--rank", required=True, type=int)
    p.add_argument("--world", required=True, type=int)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--backend", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--parent", type=int, required=True)
    args = p.parse_args(argv)
    _exit_with_parent(args.parent)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGUSR1, lambda *a: stop.set())
    signal.signal(signal.SIGUSR2, lambda *a: stop.set())  # SLURM's time-limit warning may reach every process
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    import torch

    from runner.train.distributed import Ranks, error_file, join
    from runner.records.runfolder import RunFolder, write_json_atomic
    from runner.train.worker import one_line
    from runner.train.loop import Interrupted, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(args.device))
    folder = RunFolder(args.run_dir)
    run = folder.read().run
    join(args.rank, args.world, args.port, args.backend)
    ranks = Ranks(args.rank, args.world, args.backend)
    upstream = args.run_dir.parent / run["upstream"] / "model.pt" if run.get("upstream") else None
    try:
        train(run["config"], device=args.device, checkpoint=folder.file("checkpoint.pt"), upstream=upstream,
              ranks=ranks, should_stop=stop.is_set)
    except Interrupted:
        pass
    except Exception as e:  # rank 0 reports it as the run's failure (runner/train/distributed.py)
        write_json_atomic(error_file(args.run_dir, args.rank), {"reason": one_line(e), "traceback": traceback.format_exc()})
        raise
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
