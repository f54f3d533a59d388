"""Shared helpers: the real CLI in a subprocess or in this process, the test tiers, and the staged
study on scikit-learn digits (the tiny one is tests/studies.py's ``study_toml()``).

The tiers are markers (registered in pyproject.toml): ``e2e`` for every test that starts
``runner launch``, ``tune`` or ``probe`` or a worker process, ``slurm`` and ``postgres`` for the
tests that need those servers. Nobody writes ``e2e`` by hand: the collection below reads each
test, its fixtures and the helpers they call, and marks it; a launch it could not see is caught
when it happens (``run_cli``). ``make test-fast`` runs everything else.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from studies import CNN, DIGITS, study_toml

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
LAUNCHING = frozenset({"launch", "tune", "probe"})  # the commands that start workers and train
WORKERS = frozenset({"runner.train.worker", "runner.probes.worker"})  # `python -m` of a worker itself


def staged_study(*, epochs: int, finetune: Mapping, seeds: Sequence[int] = (0,)) -> str:
    """Pretrain a small ResNet on digits 0-4 (matrix ``pretrain``), then fine-tune it on 5-9 with the
    ``finetune`` keys, e.g. ``init = "run:pretrain"`` (matrix ``finetune``; test_stages.py, test_slurm.py)."""
    return study_toml("stages", seeds=seeds, defaults={"epochs": epochs, "batch_size": 64, "lr": 3e-3},
                      architectures={"cnn": CNN},
                      datasets={"low": DIGITS | {"classes": [0, 1, 2, 3, 4]}, "high": DIGITS | {"classes": [5, 6, 7, 8, 9]}},
                      matrices=[{"name": "pretrain", "architectures": ["cnn"], "datasets": ["low"]},
                                {"name": "finetune", "architectures": ["cnn"], "datasets": ["high"], "set": finetune}],
                      tables=())


def pytest_configure(config):
    """The user cache (runner/cache.py) of the tests' commands, in-process and in subprocesses: a
    folder of this session's, so that no test reads entries a user's own commands left, nor
    leaves any in their home."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="runner-test-cache-")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["RUNNER_CACHE_DIR"] = folder


_current: pytest.Item | None = None  # the test running now, for run_cli's check


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``runner ARGS`` as a user types it, in ``cwd``."""
    if args and args[0] in LAUNCHING and _current is not None and _current.get_closest_marker("e2e") is None:
        pytest.fail(f"{_current.nodeid} runs `runner {args[0]}` but was not marked e2e: call run_cli with the "
                    "command as a literal (tests/conftest.py reads it there), or mark the test e2e", pytrace=False)
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``runner ARGS`` through the same entry point (``runner.cli.app.main``) in this process: the
    same messages on stdout and stderr and the same exit code as ``run_cli``, without the 2-5 s of
    starting Python and importing the world again. For commands that stop on bad input; anything
    that trains belongs in a subprocess."""
    from runner.cli.app import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    argv, here = sys.argv, Path.cwd()
    sys.argv = ["runner", *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = argv
        os.chdir(here)
    return subprocess.CompletedProcess(["runner", *args], code, out.getvalue(), err.getvalue())


def trained_by_other_code(run_folder: Path) -> None:
    """Make a finished run look as another version of the training code left it: its recorded
    code fingerprint differs from the installed one, so it is stale (tests/test_fingerprint.py
    edits a copy of the code for real; this saves a copy and a training where only the rule matters)."""
    from runner.records.fingerprint import current

    attempts = run_folder / "attempts.jsonl"
    text = attempts.read_text()
    assert f'"hash": "{current().hash}"' in text, "the run recorded no fingerprint of this code"
    attempts.write_text(text.replace(f'"hash": "{current().hash}"', '"hash": "0000000000000000"'))


def write_study(path: Path, text: str | None = None, *, epochs: int = 2) -> Path:
    """Write a study file (the tiny one by default) into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    f = path / "experiments.toml"
    f.write_text(text if text is not None else study_toml(epochs=epochs))
    return f


# ---------------------------------------------------------------- the tiers


def pytest_collection_modifyitems(config, items):
    """Mark ``e2e`` every test that launches (itself, through a fixture, or through a helper it
    calls), and ``postgres`` every test that asks for the real server."""
    seen: dict = {}
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        funcs = [getattr(item, "function", None)]
        if fixtures is not None:
            funcs += [defs[-1].func for name, defs in fixtures.name2fixturedefs.items() if defs and name in item.fixturenames]
        if any(_launches(f, seen) for f in funcs if f is not None):
            item.add_marker(pytest.mark.e2e)
        if "postgres" in item.fixturenames:
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _current
    _current = item


def _launches(func, seen: dict) -> bool:
    """Whether ``func`` (a test, fixture or helper defined under tests/) trains: starts a launching
    command or a worker (``run_cli("launch", ...)``, ``[sys.executable, "-m", "runner", "tune", ...]``,
    ``"-m", "runner.train.worker"``), calls the training loop in process (``train(config)``), or
    calls a function of ours that does."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or not Path(code.co_filename).resolve().is_relative_to(TESTS):
        return False
    if code not in seen:
        seen[code] = False  # a recursive helper is not a launch by itself
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
        except (OSError, SyntaxError):
            return False
        names = func.__globals__
        seen[code] = any(_starts_a_launch(node, names) for node in ast.walk(tree)) or any(
            _launches(names[n.id], seen) for n in ast.walk(tree)
            if isinstance(n, ast.Name) and inspect.isfunction(names.get(n.id)) and names[n.id] is not func)
    return seen[code]


def _starts_a_launch(node: ast.AST, names: dict) -> bool:
    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "run_cli":
        return bool(node.args) and _first_word(node.args[0], names) in LAUNCHING
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and _is_training_loop(names.get(node.func.id)):
        return True  # trains a real model in this process: seconds, like a launch
    if isinstance(node, (ast.List, ast.Tuple)):
        words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
        return bool(WORKERS & set(words)) or any(a == "runner" and b in LAUNCHING for a, b in zip(words, words[1:]))
    return False


def _is_training_loop(obj) -> bool:
    """``runner.train.loop.train`` itself, however the test module imported it."""
    return getattr(obj, "__module__", None) == "runner.train.loop" and getattr(obj, "__name__", None) == "train"


def _first_word(arg: ast.AST, names: dict):
    """The command of ``run_cli(ARG, ...)``: a literal, or the first word of ``*NAME`` (a module tuple)."""
    if isinstance(arg, ast.Constant):
        return arg.value
    if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name):
        words = names.get(arg.value.id)
        return words[0] if isinstance(words, (tuple, list)) and words else None
    return None


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A study folder with 4 quick runs (2 architectures x 2 seeds on digits)."""
    write_study(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py); skipped, with the reason, where
    none can be started."""
    from postgres import ExternalServer, PostgresServer

    if os.environ.get("RUNNER_TEST_POSTGRES_URL"):
        yield ExternalServer(os.environ["RUNNER_TEST_POSTGRES_URL"])
        return
    why = PostgresServer.missing()
    if why:
        pytest.skip(why)
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    """The store's database: a SQLite file, then a fresh database on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runner.db'}"
    return request.getfixturevalue("postgres").new_database()
