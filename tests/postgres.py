"""A real PostgreSQL server for the store tests: Debian's ``postgresql`` binaries, a throwaway
cluster in a temp directory on a free port, started once per test session.

PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the ``postgres``
user that Debian's package creates. ``RUNNER_TEST_POSTGRES_URL`` points the tests at a server
of your own instead (a SQLAlchemy URL of a database the tests may create databases from).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database(base_url: str) -> str:
    """A new empty database on the server of ``base_url``; its URL."""
    import sqlalchemy as sa

    name = "t" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return sa.engine.make_url(base_url).set(database=name).render_as_string(hide_password=False)


class PostgresServer:
    """``start()`` a cluster, ``new_database()`` for each test, ``stop()`` at the end."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="runner-pg-"))
        self.port = _free_port()
        self.as_root = os.geteuid() == 0

    @staticmethod
    def missing() -> str | None:
        """Why no server can be started here, or None."""
        if _bin("initdb") is None or _bin("pg_ctl") is None:
            return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser, so PostgreSQL cannot be started as another user"
        return None

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        subprocess.run(prefix + list(cmd), check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(_bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        return create_database(self.url())

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class ExternalServer:
    """A server the user named with RUNNER_TEST_POSTGRES_URL."""

    def __init__(self, url: str):
        self.base = url

    def new_database(self) -> str:
        return create_database(self.base)

    def stop(self) -> None:
        pass
