"""A probe worker process: ``python -m runner.probes.worker --tasks FILE --study-dir DIR``.

Takes its tasks (run folder, probe) in order, grouped by run so each model is built and its
selected weights are loaded once (runner/probes/model.py); each task's kind computes it
(runner/probes/kinds/). Each result goes into ``<run folder>/probes/<name>-<key>/``: the
arrays first, ``result.json`` last (the done mark), each replaced atomically; a probe that
fails writes ``error.json`` with its reason and the worker goes on. Writes no database: the
``runner probe`` process ingests the folders.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from runner.probes.kinds import get_kind
from runner.probes.model import load_model
from runner.records.runfolder import read_json, write_atomic, write_json_atomic
from runner.train.worker import one_line, release_memory

RESULT, ERROR = "result.json", "error.json"


def run_task(model, config: dict, task: dict, device, study_dir: Path) -> tuple[dict, dict]:
    """The task's kind computes it (runner/probes/kinds/); its summary must hold what the kind
    says it records, which its report table reads."""
    kind = get_kind(task["kind"])
    summary, arrays = kind.compute(model, config, task["settings"], device, study_dir)
    missing = [name for name in kind.results if name not in summary]
    if missing:
        raise RuntimeError(f"the {kind.name} probe returned no {', '.join(missing)} "
                           f"(runner/probes/kinds/{kind.name}.py)")
    return summary, arrays


def save(out: Path, task: dict, summary: dict, arrays: dict, seconds: float, device: str, env: dict) -> None:
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    files = []
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        write_atomic(out / "arrays.npz", lambda f: f.write(buf.getvalue()))
        files.append("arrays.npz")
    (out / ERROR).unlink(missing_ok=True)
    write_json_atomic(out / RESULT, {
        "probe": task["name"], "kind": task["kind"], "key": task["key"], "settings": task["settings"],
        "run": Path(task["run_folder"]).name, "time": time.time(), "seconds": seconds, "device": device,
        "host": socket.gethostname(), **env, "files": files, "summary": summary})


def fail(out: Path, task: dict, exc: BaseException) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / ERROR, {"probe": task["name"], "kind": task["kind"], "key": task["key"],
                                    "run": Path(task["run_folder"]).name, "time": time.time(),
                                    "reason": one_line(exc), "traceback": traceback.format_exc()})


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner process stops its workers with SIGTERM
    p = argparse.ArgumentParser(prog="runner.probes.worker", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", required=True, type=Path, help="JSON list of {run_folder, name, kind, key, settings, out}")
    p.add_argument("--study-dir", required=True, type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    from runner.records.provenance import torch_info

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda:0" if args.device == "cuda" else args.device)
    env = {"hardware": torch_info(str(device))}
    tasks = json.loads(args.tasks.read_text())
    failed = 0
    by_run: dict[str, list[dict]] = {}
    for t in tasks:
        by_run.setdefault(t["run_folder"], []).append(t)
    for folder, group in by_run.items():
        config = (read_json(Path(folder) / "run.json") or {}).get("config")
        try:
            model = load_model(Path(folder), config, device)
        except Exception as e:
            for t in group:
                fail(Path(t["out"]), t, e)
            failed += len(group)
            continue
        for t in group:
            t0 = time.perf_counter()
            try:
                summary, arrays = run_task(model, config, t, device, args.study_dir)
                save(Path(t["out"]), t, summary, arrays, time.perf_counter() - t0, str(device), env)
            except Exception as e:
                fail(Path(t["out"]), t, e)
                failed += 1
                release_memory()
        del model
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
