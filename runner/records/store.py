"""The store: an index of the run folders in a SQL database (SQLAlchemy 2; SQLite by default).

Only the ``runner`` process the user runs writes it, by ingesting run folders:
idempotently (a folder whose files did not change is skipped), under a file lock
(two launchers never interleave), a thousand runs a transaction with one bulk
insert per table (WAL: readers never wait on it). Everything in it comes from the
folders, so ``rebuild`` can always recreate it. Callers get frozen
``RunRecord`` objects, never rows. The tables are in ``tables.py``; a folder is
read into rows by ``folder_rows.py`` and the rows written by ``index_write.py``.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import math
import os
import sqlite3
from contextlib import closing, contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from runner.errors import StoreError
from runner.records.folder_rows import dumps, metrics_grown_from, read_batches, run_folders
from runner.records.runfolder import RunFolder, still_done
from runner.records.schema import GONE, SCHEMA_VERSION, UPGRADES
from runner.records.summary import Summary
from runner.states import State
from runner.study.spec import sqlite_path


class _OnFirstUse:
    """A module imported when first used. SQLAlchemy (0.4 s here) and what is built on it are
    needed to make, upgrade or write the index; on SQLite, the reads of ``status``, ``plan`` and a
    poll with nothing new go through the sqlite3 module (``Store._read``) and never import it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


sa = _OnFirstUse("sqlalchemy")
tables = _OnFirstUse("runner.records.tables")
index_write = _OnFirstUse("runner.records.index_write")
probes = _OnFirstUse("runner.records.probes")

INGEST_BATCH = 1000  # runs per ingest transaction


class RunRecord(NamedTuple):
    """A run as the index holds it (a named tuple: ``status`` builds 10,000 of them, five times
    quicker than a frozen dataclass; ``rec._replace(state=...)`` makes a changed copy)."""

    id: str
    cell: str
    label: str
    matrices: tuple[str, ...]
    state: State
    reason: str | None
    summary: Summary | None  # as the run folder holds it (an older runner's may lack keys)
    progress: dict | None
    attempts: int
    git_commit: str | None
    started_at: float | None
    finished_at: float | None
    folder: str
    code_hash: str | None = None  # the code fingerprint it finished with (None: recorded before there was one)
    warnings: tuple[str, ...] = ()  # what it lost on the way: a metrics line cut by a crash, a missing checkpoint


class Store:
    def __init__(self, url: str, *, lock_dir: Path, rebuild: bool = False):
        """``rebuild``: a store of another schema version gets runner's tables dropped and made
        anew (``runner sync --rebuild`` then fills them from the run folders); Optuna's tables in
        the same database are left as they are."""
        self.url = url
        self.lock_path = lock_dir / ".ingest.lock"
        path = sqlite_path(url)
        self._file = path if path is not None and "?" not in url else None  # read through sqlite3
        if self._file is None:
            self.engine  # made now: a server URL that cannot be opened is said at once
        if not self._is_current():
            self._check_schema(rebuild)

    @cached_property
    def engine(self) -> "sa.Engine":
        """The SQLAlchemy engine, made when first needed (see ``_OnFirstUse``)."""
        try:
            return _engine(self.url)
        except (sa.exc.ArgumentError, ImportError) as e:  # a malformed URL, an unknown dialect, no driver
            raise StoreError(f"{self.url}: not a database this runner can open ({type(e).__name__}: {e}); "
                             'use "sqlite:///results/runner.db" or "postgresql+psycopg://user@host/db"') from None

    # ------------------------------------------------ opening

    @classmethod
    def open(cls, url: str, lock_dir: Path, *, create: bool = True, rebuild: bool = False) -> "Store | None":
        """Open (and create) the store; with ``create=False`` a SQLite file that does not exist gives None,
        so read-only commands never create files."""
        path = sqlite_path(url)
        if path is not None and not path.exists():
            if not create:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
        if create:
            lock_dir.mkdir(parents=True, exist_ok=True)
        return cls(url, lock_dir=lock_dir, rebuild=rebuild)

    def _version(self, conn) -> str | None:
        m = tables.meta_table
        if not sa.inspect(conn).has_table(m.name):
            return None
        return conn.execute(sa.select(m.c.value).where(m.c.key == "schema_version")).scalar()

    def _is_current(self) -> bool:
        """True for a SQLite store of this schema version: nothing to make or upgrade, found out
        without SQLAlchemy. Anything else (a new file, another version, not a database) goes
        through ``_check_schema``, which says what is wrong."""
        if self._file is None or not self._file.exists():
            return False
        try:
            return self._read("SELECT value FROM mr_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
        except sqlite3.Error:
            return False

    def _check_schema(self, rebuild: bool = False) -> None:
        try:
            m = tables.meta_table
            with self.engine.begin() as conn:
                if rebuild and self._version(conn) not in (None, str(SCHEMA_VERSION)):
                    for gone in GONE:  # first: they refer to mr_runs
                        conn.execute(sa.text(f"DROP TABLE IF EXISTS {gone}"))
                    tables.meta.drop_all(conn)  # runner's tables only: Optuna's are not in ``meta``
                tables.meta.create_all(conn)
                row = conn.execute(sa.select(m.c.value).where(m.c.key == "schema_version")).first()
                if row is None:
                    conn.execute(m.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                    return
                version = int(row.value)
                while version in UPGRADES and version < SCHEMA_VERSION:
                    for statement in UPGRADES[version]:
                        conn.execute(sa.text(statement))
                    version += 1
                    conn.execute(m.update().where(m.c.key == "schema_version").values(value=str(version)))
                if version != SCHEMA_VERSION:
                    newer = version > SCHEMA_VERSION
                    raise StoreError(
                        f"{self.url}: results index has schema version {row.value}, this runner uses {SCHEMA_VERSION}"
                        + (" (a newer runner wrote it: upgrade runner, or " if newer else "; ")
                        + "rebuild it from the run folders with `runner sync --rebuild`"
                        + (")" if newer else " (tuning studies in the same database are kept)"))
        except sa.exc.OperationalError as e:
            raise StoreError(f"{self.url}: cannot open the results database: {e.orig}") from None

    # ------------------------------------------------ reading

    def _read(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        """The rows of a plain SELECT (``:name`` parameters): on SQLite through the sqlite3 module,
        a connection per call (no SQLAlchemy import, no pool to carry across the forks of an
        ingest); on a server through the engine. JSON columns come back as text from SQLite and
        decoded from a server (``_decode_all`` evens that out)."""
        if self._file is not None:
            with closing(sqlite3.connect(self._file, timeout=60)) as db:
                return db.execute(sql, params or {}).fetchall()
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params or {})]

    def runs(self, ids: Iterable[str] | None = None, *, details: bool = True, progress: bool = True,
             state: State | None = None) -> dict[str, RunRecord]:
        """Records by id (all, or the given ids, or those in ``state``). Configs stay in the database:
        the plan has them. Without ``details`` the summary and progress are left out (``plan`` needs
        only states); without ``progress`` the last heartbeat is (``report`` reads summaries only)."""
        # columns in RunRecord's field order, so a row becomes a record without lookups
        columns = ["id", "cell", "label", "matrices", "state", "reason", "summary" if details else "NULL",
                   "progress" if details and progress else "NULL", "attempts", "git_commit", "started_at",
                   "finished_at", "folder", "code_hash", "warnings" if details else "NULL"]
        ids = None if ids is None else list(ids)
        where, params = [], {}
        if ids is not None and len(ids) <= 500:
            where.append(_among("id", ids, params))
        if state is not None:
            where.append("state = :state")
            params["state"] = state.value
        rows = self._read(f"SELECT {', '.join(columns)} FROM mr_runs" + _where(where), params)
        if not rows:
            return {}
        cols = list(zip(*rows))
        if self._file is not None:
            for k in _JSON_AT:
                cols[k] = _decode_all(cols[k])
        records = {r[0]: RunRecord(r[0], r[1], r[2], tuple(r[3] or ()), _STATES[r[4]], *r[5:-1], tuple(r[-1] or ()))
                   for r in zip(*cols)}
        return records if ids is None else {i: records[i] for i in ids if i in records}

    def ids(self, *, state: State | None = None) -> list[str]:
        """The ids of every run indexed (in ``state``): no record built, no JSON read."""
        if state is None:
            return [r[0] for r in self._read("SELECT id FROM mr_runs")]
        return [r[0] for r in self._read("SELECT id FROM mr_runs WHERE state = :state", {"state": state.value})]

    def config(self, run_id: str) -> dict | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(tables.runs_table.c.config).where(tables.runs_table.c.id == run_id)).scalar()

    def attempts(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables.attempts_table).where(tables.attempts_table.c.run_id == run_id)
                                .order_by(tables.attempts_table.c.number))
            return [dict(r._mapping) for r in rows]

    def metrics(self, run_ids: Iterable[str]) -> list[dict]:
        """Metric series rows ``{run_id, name, step, epoch, value, time}`` of the given runs, by run and step."""
        out = []
        for rid, name, steps, epochs, values, times in self._series_rows(run_ids, None):
            out.extend({"run_id": rid, "name": name, "step": s, "epoch": e, "value": v, "time": t}
                       for s, e, v, t in zip(steps, epochs, values, times))
        out.sort(key=lambda m: (m["run_id"], m["step"]))
        return out

    def series(self, run_ids: Iterable[str], name: str) -> tuple[list[str], list[int], list[float]]:
        """One metric's per-epoch values of the given runs, as columns ``(run_ids, epochs, values)``:
        what a learning curve needs, read without building a row object per value."""
        cols: tuple[list, list, list] = ([], [], [])
        for rid, _, _, epochs, values, _ in self._series_rows(run_ids, name):
            cols[0].extend([rid] * len(epochs)), cols[1].extend(epochs), cols[2].extend(values)
        return cols

    def _series_rows(self, run_ids: Iterable[str], name: str | None) -> list[tuple]:
        """``(run_id, name, steps, epochs, values, times)`` of the runs (of one metric, or all),
        by run: the arrays decoded, a run in flight's rows of one metric joined in step order."""
        ids, c = list(run_ids), tables.series_table.c
        rows: list = []
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = sa.select(c.run_id, c.name, c.steps, c.epochs, c.vals, c.times).where(c.run_id.in_(ids[i:i + 500]))
                if name is not None:
                    q = q.where(c.name == name)
                rows += conn.execute(q.order_by(c.run_id, c.name, c.first_step)).all()
        if not rows:
            return []
        cols = list(zip(*rows))
        out: list[tuple] = []
        for row in zip(cols[0], cols[1], *(_decode_all(cols[k]) for k in (2, 3, 4, 5))):
            if out and out[-1][:2] == row[:2]:
                for have, more in zip(out[-1][2:], row[2:]):
                    have.extend(more)
            else:
                out.append(row)
        return out

    def hardware(self) -> dict[str, tuple[str, ...]]:
        """Per run, the devices its attempts trained on: the GPU model, or ``cpu`` (what a table
        flags when the seeds of one cell ran on different hardware)."""
        a = tables.attempts_table.c
        out: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for run_id, model, device in conn.execute(sa.select(a.run_id, a.gpu_model, a.device)):
                if model or device:
                    out.setdefault(run_id, set()).add(model or ("cpu" if device == "cpu" else device))
        return {k: tuple(sorted(v)) for k, v in out.items()}

    def history(self) -> list[dict]:
        """Finished runs as ``{cell, config, summary, seconds}``, seconds being the wall time of all
        their attempts: what the launcher estimates the length of similar runs from."""
        r, a = tables.runs_table.c, tables.attempts_table.c
        seconds = sa.func.sum(a.ended_at - a.started_at)
        q = (sa.select(r.cell, r.config, r.summary, seconds).join(tables.attempts_table, a.run_id == r.id)
             .where(r.state == State.DONE.value, a.ended_at.is_not(None), a.started_at.is_not(None)).group_by(r.id))
        with self.engine.connect() as conn:
            return [{"cell": row[0], "config": row[1], "summary": row[2], "seconds": row[3]} for row in conn.execute(q)]

    def probes(self, run_ids: Iterable[str] | None = None, *, probe: str | None = None) -> list[dict]:
        """Probe results (runner/probes/launch.py) as dicts of the ``mr_probes`` columns, of the given runs
        (all if None) and probe name."""
        c = tables.probes_table.c
        q = sa.select(tables.probes_table)
        if probe is not None:
            q = q.where(c.probe == probe)
        ids = None if run_ids is None else set(run_ids)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.order_by(c.run_id, c.probe))]
        return rows if ids is None else [r for r in rows if r["run_id"] in ids]

    def find(self, prefix: str) -> list[str]:
        return [r[0] for r in self._read("SELECT id FROM mr_runs WHERE id LIKE :p", {"p": prefix + "%"})]

    def find_cell(self, prefix: str) -> list[tuple[str, str, str, str]]:
        """(cell, run id, label, state) of the runs of the cells whose id starts with ``prefix``."""
        return self._read("SELECT cell, id, label, state FROM mr_runs WHERE cell LIKE :p ORDER BY label",
                          {"p": prefix + "%"})

    # ------------------------------------------------ ingestion

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.lock_path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def ingest(self, runs_dir: Path, ids: Iterable[str] | None = None) -> int:
        """Bring the index up to date with the run folders (all, or the given ids); returns rows
        changed. A database on a full disk raises a ``StoreError`` that says so (the folders keep
        everything; the next ingest catches up)."""
        try:
            return self._ingest(runs_dir, ids)
        except sa.exc.OperationalError as e:
            if "full" in str(e.orig):  # SQLite: "database or disk is full"; PostgreSQL: "could not extend file"
                raise StoreError(f"{self.url}: no space left on device writing the results index ({e.orig})") from None
            raise

    def _ingest(self, runs_dir: Path, ids: Iterable[str] | None) -> int:
        runs_dir = Path(runs_dir)
        if ids is None:
            folders = run_folders(runs_dir)
        else:
            base = f"{runs_dir}{os.sep}"  # plain strings: a launch's poll asks of every run in flight
            folders = [(i, base + i) for i in ids]
        if not folders:
            return 0
        changed = 0
        with self._lock():
            q = "SELECT id, folder_sig, state, last_step FROM mr_runs"
            if ids is None or len(folders) > 500:  # a launch's poll asks of its runs in flight only
                known = {r[0]: r[1:] for r in self._read(q)}
            else:
                params: dict[str, Any] = {}
                known = {r[0]: r[1:] for r in self._read(q + _where([_among("id", [n for n, _ in folders], params)]),
                                                         params)}
            todo = []
            for name, path in folders:
                old_sig, old_state, _ = known.get(name, (None, None, None))
                if old_state == State.DONE and still_done(path, old_sig):
                    continue
                f = RunFolder(path)
                sig = f.signature()
                if sig.startswith("-|"):  # no run.json (yet): not a run's folder
                    continue
                # a running run can turn lost with no file changing, so it is always looked at
                if sig != old_sig or old_state == State.RUNNING:
                    todo.append((f, sig, metrics_grown_from(old_sig, sig)))
            todo.sort(key=lambda t: t[0].path.name)  # in key order, the index's B-trees grow at one end
            changed = self._write_batches(todo, known)
        return changed

    def _write_batches(self, todo: list[tuple[RunFolder, str, int | None]], known: dict) -> int:
        """Index the folders in ``todo`` a thousand runs a transaction: one statement per table, not
        per run (a reader never waits on it: WAL), and what is in memory at once stays a batch's
        rows. (A thread writing one batch while the next is read was slower: binding a row's
        parameters holds the interpreter, and there are a hundred rows per run.) A run whose
        metrics only grew since it was indexed gets its new points only."""
        changed = 0
        for rows in read_batches([todo[i:i + INGEST_BATCH] for i in range(0, len(todo), INGEST_BATCH)]):
            whole = [r for r in rows if r[1] is not None]
            with self.engine.begin() as conn:
                index_write.write_whole(conn, whole, replace=[r[0]["id"] for r in whole if r[0]["id"] in known])
                index_write.write_grown(conn, [r for r in rows if r[1] is None], {i: k[2] for i, k in known.items()})
            changed += len(rows)
        return changed

    def ingest_probes(self, runs_dir: Path, ids: Iterable[str] | None = None) -> int:
        """Bring ``mr_probes`` up to date with the ``probes/`` folders of the runs (all, or the given
        ids); returns rows changed. A result folder whose files did not change is skipped."""
        runs_dir = Path(runs_dir)
        found = probes.probe_folders(runs_dir, [n for n, _ in run_folders(runs_dir)] if ids is None else list(ids))
        if not found:
            return 0
        changed = 0
        with self._lock():
            with self.engine.connect() as conn:
                known = {r.folder: r.folder_sig for r in conn.execute(sa.select(tables.probes_table.c.folder,
                                                                                tables.probes_table.c.folder_sig))}
            todo = [(run_id, path, sig) for run_id, path in found
                    if (sig := probes.probe_sig(path)) is not None and known.get(path) != sig]
            for i in range(0, len(todo), 200):
                with self.engine.begin() as conn:
                    for run_id, path, sig in todo[i:i + 200]:
                        changed += probes.ingest_probe(conn, tables.probes_table, run_id, Path(path), sig)
        return changed

    def rebuild(self, runs_dir: Path) -> int:
        """Forget the index and recreate it from the run folders."""
        with self._lock(), self.engine.begin() as conn:
            for t in (tables.series_table, tables.attempts_table, tables.runs_table, tables.probes_table):
                conn.execute(t.delete())
        n = self.ingest(runs_dir)
        self.ingest_probes(runs_dir)
        return n


def _engine(url: str) -> sa.Engine:
    if sqlite_path(url) is None:  # a server's JSON (PostgreSQL's) has no nan or inf: they are stored as null
        return sa.create_engine(url, pool_pre_ping=True, json_serializer=lambda obj: dumps(_finite(obj)))
    engine = sa.create_engine(url, connect_args={"timeout": 60}, json_serializer=dumps)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never block the one writer
        # no fsync per transaction, only at checkpoints: a power cut may lose the last ingests, never
        # the database's integrity, and the run folders hold everything an ingest wrote
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def _among(column: str, values: list, params: dict[str, Any]) -> str:
    """``column IN (:v0, :v1, ...)``, its values added to ``params``: the same text for sqlite3 and
    for SQLAlchemy's ``text()``, which have no list parameter in common."""
    start = len(params)
    params.update({f"v{start + i}": v for i, v in enumerate(values)})
    return f"{column} IN ({', '.join(f':v{start + i}' for i in range(len(values)))})"


def _where(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


_STATES = {s.value: s for s in State}  # a dict lookup, not Enum's call
_JSON_AT = (3, 6, 7, 14)  # where ``runs`` reads JSON columns: matrices, summary, progress, warnings


def _decode_all(texts: tuple[str | None, ...]) -> list[Any]:
    """JSON texts (None: SQL NULL) decoded by one call of json's C decoder: a status over 10,000
    runs would otherwise make 40,000 calls, each through SQLAlchemy's result processing."""
    try:
        return json.loads("[" + ",".join("null" if t is None else t for t in texts) + "]")
    except json.JSONDecodeError:  # one value is not JSON (a hand edit of the index): each alone
        out = []
        for t in texts:
            try:
                out.append(None if t is None else json.loads(t))
            except json.JSONDecodeError:
                out.append(None)
        return out


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
