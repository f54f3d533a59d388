"""How the commands typed most scale with the study: 10,000 runs, then 100,000.

At each size the study is the CLI bench's generator (10 architectures x 10 datasets x a grid of
learning rates and epoch counts, one seed), every run a finished run folder in the worker's
format with 10 epochs x 10 metrics (100 metric values a run), and the report bench's three tables
plus the 30 built-in figure panels. Timed in fresh processes (median of ``--repeat``; one at
100,000 runs):

* ``runner sync`` indexing every folder into an empty store (and its metric values per second);
* ``runner status``, ``runner plan --json``;
* ``runner report`` with its figures drawn from nothing;
* the launcher's ingest per poll with 100 runs in flight (each poll appends an epoch to each and
  rewrites its heartbeat, as workers do, then times what the launcher calls: ingesting those
  folders and reading their records), in process, the median of 20 polls;
* the peak RSS of ``sync`` and ``report`` (the largest process: the figure processes are forks).

References measured in the same run: ``python -c pass``, ``runner plan`` on the same study and
store, and, at the smallest size, the same commands run by the code as it was when issue 26 was
filed (commit ``REFERENCE``, unpacked with ``git archive`` and put first on ``PYTHONPATH``), in a
study folder of its own over the same run folders, each of its runs right after the same run of
this code. Both trees are byte-compiled first, as an install does. The issue's goals were seconds on the machine it was filed on; as speedups over that code they hold on
any machine: sync 16.4 s -> 4 s is x4.1, status 1.2 s -> 0.5 s x2.4, plan --json 1.5 s -> 1 s
x1.5, report 10.7 s -> 3 s x3.6. The verdicts are those speedups; the seconds are printed beside
them (ingest per poll, new in the issue, keeps its 50 ms). The user cache (``runner/cache.py``)
lives in a temporary folder, filled by an untimed ``runner plan`` first, as a session's first
command fills a user's; ``plan (no cache)`` shows what it saves. At 100,000 runs the growth of
each figure over its 10,000-run value (10x is linear). Takes about twenty minutes and 3 GB of
disk at both sizes.

    python bench/scale.py [--sizes 10000 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cli_speed import study_text  # noqa: E402
from report_speed import TABLES, write_folders  # noqa: E402

LIVE, POLLS = 100, 20
REFERENCE = "c63feff"  # main when issue 26 was filed
# issue 26's goals: (seconds when it was filed, seconds wanted) on the machine it was filed on
GOALS = {"runner sync": (16.4, 4.0), "runner status": (1.2, 0.5), "runner plan --json": (1.5, 1.0),
         "runner report (figures from nothing)": (10.7, 3.0)}
POLL_GOAL_S = 0.05
RSS_GOAL_MB = 1024  # at 100,000 runs


def timed(cmd: list[str], cwd: Path, env: dict, before=None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the process and its largest descendant) of one fresh run."""
    if before:
        before(cwd)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def medians(cmd, places: list[tuple[Path, dict]], repeat, before=None) -> list[tuple[float, float]]:
    """(median seconds, peak RSS) of ``cmd`` in each (folder, environment), the runs taking turns:
    a spell of a busy machine slows every code alike instead of whichever was being timed."""
    runs: list[list] = [[] for _ in places]
    for _ in range(repeat):
        for got, (cwd, env) in zip(runs, places):
            got.append(timed(cmd, cwd, env, before))
    return [(statistics.median(s for s, _ in got), max(m for _, m in got)) for got in runs]


def live_polls(d: Path) -> float:
    """Median seconds of the launcher's per-poll work with ``LIVE`` runs in flight."""
    from runner.commands import load, open_store

    sel = load(d / "experiments.toml")
    store = open_store(sel.study, create=True)
    runs_dir = sel.study.runs_dir
    template = json.loads((runs_dir / sel.runs[0].id / "run.json").read_text())
    ids = [f"live{i:08x}" for i in range(LIVE)]
    now = time.time()
    for rid in ids:  # started by this process, beating: running, as a worker's folder is
        f = runs_dir / rid
        f.mkdir()
        (f / "run.json").write_text(json.dumps({**template, "id": rid, "label": f"live/{rid}"}))
        (f / "attempts.jsonl").write_text(json.dumps({"event": "start", "attempt": 1, "time": now, "pid": os.getpid(),
                                                      "host": socket.gethostname(), "provenance": {}}) + "\n")
    store.ingest(runs_dir, ids)
    times = []
    for epoch in range(1, POLLS + 1):
        for rid in ids:
            f = runs_dir / rid
            with open(f / "metrics.jsonl", "a") as out:
                out.write(json.dumps({"attempt": 1, "epoch": epoch, "step": epoch * 10, "time": time.time(),
                                      **{f"m{k}": epoch / 100 + k for k in range(10)}}) + "\n")
            (f / "heartbeat.json").write_text(json.dumps({"time": time.time(), "pid": os.getpid(), "attempt": 1,
                                                          "epoch": epoch, "epochs": POLLS}))
        t0 = time.perf_counter()
        store.ingest(runs_dir, ids)
        records = store.runs(ids)
        times.append(time.perf_counter() - t0)
        assert all(r.state == "running" for r in records.values()) and len(records) == LIVE
    store.engine.dispose()
    for rid in ids:
        shutil.rmtree(runs_dir / rid)
    return statistics.median(times)


def reference_code(root: Path) -> Path | None:
    """The project's files at ``REFERENCE`` in ``root/reference`` (None without git history)."""
    where = root / "reference"
    where.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", REFERENCE], capture_output=True)
    if archive.returncode != 0:
        print(f"no reference: git archive {REFERENCE} failed ({archive.stderr.decode().strip()})")
        return None
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def compiled(tree: Path) -> None:
    """Byte-compile a code tree's packages, as installing it does: every command then starts
    from .pyc files, whichever code it runs (with PYTHONDONTWRITEBYTECODE set, a tree unpacked
    for the bench would otherwise be compiled anew by each command)."""
    packages = [str(tree / p) for p in ("runner", "architectures", "datasets", "analysis") if (tree / p).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True, stdout=subprocess.DEVNULL)


def measure(n: int, repeat: int, root: Path, reference: Path | None) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{"now": figures, "reference": figures of the REFERENCE code (when given)} at ``n`` runs.
    The reference works in a study folder of its own (its store has its own schema) whose run
    folders are this one's."""
    d = root / f"study-{n}"
    d.mkdir()
    study = study_text(n_lr=n // 1000) + TABLES
    (d / "experiments.toml").write_text(study)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {**base, "RUNNER_CACHE_DIR": str(root / f"cache-{n}")}
    os.environ["RUNNER_CACHE_DIR"] = env["RUNNER_CACHE_DIR"]  # this process's own calls (the folders, the polls)
    t0 = time.perf_counter()
    rows = write_folders(d)
    print(f"{n:,} run folders, {rows:,} metric values, written in {time.perf_counter() - t0:.0f} s", flush=True)
    places = [(d, env)]
    if reference is not None:
        ref = root / f"study-{n}-reference"
        (ref / "results").mkdir(parents=True)
        (ref / "experiments.toml").write_text(study)
        (ref / "results" / "runs").symlink_to(d / "results" / "runs")
        places.append((ref, {**base, "RUNNER_CACHE_DIR": str(root / f"cache-{n}-reference"), "PYTHONPATH": str(reference)}))
    figures = commands(places, repeat, rows)
    out = {"now": figures[0]} | ({"reference": figures[1]} if reference is not None else {})
    out["now"]["runner plan (no cache)"] = medians([sys.executable, "-m", "runner", "plan"],
                                                   [(d, {**env, "RUNNER_CACHE_DIR": "off"})], repeat)[0]
    out["now"]["ingest per poll (100 live runs)"] = (live_polls(d), None)
    shutil.rmtree(d)
    return out


def commands(places: list[tuple[Path, dict]], repeat: int, rows: int) -> list[dict[str, tuple[float, float | None]]]:
    """Each command timed in fresh processes in each (study folder, environment: its PYTHONPATH
    says whose code), from an empty store on."""
    runner = [sys.executable, "-m", "runner"]

    def no_store(cwd: Path):
        for suffix in ("", "-wal", "-shm"):
            (cwd / "results" / f"runner.db{suffix}").unlink(missing_ok=True)

    def no_figures(cwd: Path):
        shutil.rmtree(cwd / "results" / "report" / "figures", ignore_errors=True)

    out: list[dict[str, tuple[float, float | None]]] = [{} for _ in places]

    def each(name: str, got: list[tuple[float, float]], rss: bool = True) -> None:
        for o, g in zip(out, got):
            o[name] = g if rss else (g[0], None)

    each("runner sync", medians([*runner, "sync"], places, repeat, before=no_store))
    for o in out:
        o["metric values per second"] = (rows / o["runner sync"][0], None)
    each("python -c pass", medians([sys.executable, "-c", "pass"], places, repeat), rss=False)
    for cwd, env in places:  # fills the plan cache, as the first command of a session does
        timed([*runner, "plan"], cwd, env)
    each("runner plan", medians([*runner, "plan"], places, repeat))
    each("runner status", medians([*runner, "status"], places, repeat))
    each("runner plan --json", medians([*runner, "plan", "--json"], places, repeat))
    each("runner report (figures from nothing)", medians([*runner, "report"], places, repeat, before=no_figures))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    results, ref = {}, None
    with tempfile.TemporaryDirectory(prefix="runner-scale-") as tmp:
        reference = reference_code(Path(tmp))
        for tree in (ROOT, reference):
            if tree is not None:
                compiled(tree)
        base = min(args.sizes)
        for n in args.sizes:
            got = measure(n, args.repeat if n <= 10_000 else 1, Path(tmp), reference if n == base else None)
            results[n] = got["now"]
            ref = got.get("reference", ref)
    names = list(results[base])
    print(f"\n{'measure':<40}" + (f"{'reference':>14}" if ref else "")
          + "".join(f"{f'{n:,} runs':>14}" for n in results) + f"{'RSS MiB':>9}"
          + f"  verdict at {base:,} runs (speedup over {REFERENCE}, the code issue 26 measured); growth at larger sizes")
    for name in names:
        number = (lambda v: f"{v:>14,.0f}") if name.startswith("metric values") else (lambda v: f"{v:>14.3f}")
        line = f"{name:<40}" + ((number(ref[name][0]) if name in ref else " " * 14) if ref else "")
        line += "".join(number(results[n][name][0]) for n in results)
        rss = [results[n][name][1] for n in results if results[n][name][1] is not None]
        line += f"{max(rss):>9.0f}" if rss else " " * 9
        verdict = []
        if name in GOALS and ref:
            was, wanted = GOALS[name]
            speedup = ref[name][0] / results[base][name][0]
            verdict.append(f"x{speedup:.2f}: {'meets' if speedup >= was / wanted else 'MISSES'} x{was / wanted:.1f} "
                           f"({was:g} s -> {wanted:g} s)")
        if name == "metric values per second" and ref:
            verdict.append(f"x{results[base][name][0] / ref[name][0]:.2f} the reference's rate (goal x{250 / 61:.1f})")
        if name.startswith("ingest per poll"):
            ok = results[base][name][0] <= POLL_GOAL_S
            verdict.append(f"{'meets' if ok else 'MISSES'} <= {POLL_GOAL_S * 1000:.0f} ms")
        for n in results:
            if n != base and not name.startswith(("metric values", "python")):
                verdict.append(f"x{results[n][name][0] / results[base][name][0]:.1f} at {n // base}x the runs")
        print(line + "  " + "; ".join(verdict))
    for n in results:
        plan = results[n]["runner plan"][0]
        print(f"{n:,} runs: report from nothing = {results[n]['runner report (figures from nothing)'][0] / plan:.1f}x "
              f"`runner plan`, status = {results[n]['runner status'][0] / plan:.2f}x")
    big = max(results)
    peak = max(results[big][k][1] for k in ("runner sync", "runner report (figures from nothing)"))
    print(f"peak RSS of sync and report at {big:,} runs: {peak:.0f} MiB "
          f"({'meets' if peak < RSS_GOAL_MB else 'MISSES'} < {RSS_GOAL_MB} MiB)")


if __name__ == "__main__":
    main()
