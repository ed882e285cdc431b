"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, a free port, gone after.

Tests never depend on a server someone left running. ``PostgresServer`` uses the binaries of
Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``, newest first; or the folder
named by ``ES_TEST_POSTGRES_BIN``). As root it runs them as the ``postgres`` user, which initdb
requires. It starts in about a second; ``stop_server()`` / ``start_server()`` keep the data folder,
for outage tests. The server runs with test-only speed settings (``fsync=off`` and friends, see
``FAST_SETTINGS``): fine for functional tests, never for benchmarks of durability.

Standard library only: databases are created with the server's own ``createdb``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.testing.processes import StartStop, free_port

FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}

INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, pg_ctl) were not found. On Debian/Ubuntu: "
    "sudo apt-get install postgresql (`make test` does this itself when run as root), "
    "or set ES_TEST_POSTGRES_BIN to the folder holding initdb."
)


class PostgresUnavailableError(UwsgiEsError, RuntimeError):
    """The server could not be found, started or reached; the message ends with its log."""


def find_postgres_bin() -> Path:
    configured = os.environ.get("ES_TEST_POSTGRES_BIN")
    candidates = [configured] if configured else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresUnavailableError(INSTALL_HINT)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


class PostgresServer(StartStop):
    """One PostgreSQL server on 127.0.0.1 and a free port, in its own temporary folder."""

    def __init__(self, *, settings: Mapping[str, str] = FAST_SETTINGS, bin_dir: Path | None = None) -> None:
        self.settings = dict(settings)
        self.bin_dir = bin_dir or find_postgres_bin()
        self.port = 0
        self.folder: Path | None = None
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    @property
    def data(self) -> Path:
        return self._folder / "data"

    @property
    def log_path(self) -> Path:
        return self._folder / "server.log"

    @property
    def _folder(self) -> Path:
        if self.folder is None:
            raise PostgresUnavailableError("the server was never started")
        return self.folder

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, port: int | None = None) -> Self:
        """initdb and start, on ``port`` or a free one."""
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="uwsgi_es-pg-"))
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"
        )
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start (or restart after ``stop_server``) on the same data folder and port."""
        options = [f"-p {self.port}", f"-k {self._folder}", "-c listen_addresses=127.0.0.1"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
        )

    def start_standby_of(self, primary: PostgresServer) -> Self:
        """A streaming standby of ``primary`` (``pg_basebackup -R``), on a free port; it replays
        the primary's WAL and takes no writes until ``promote()``."""
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="uwsgi_es-pg-standby-"))
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(self.data), "-R", "-X", "stream", "--checkpoint=fast",
        )  # fmt: skip
        self.start_server()
        return self

    def promote(self) -> None:
        """End recovery: this standby becomes a primary and takes writes (``pg_ctl promote``)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend (a crashed host, as far as clients can tell);
        the data folder stays, for ``start_server`` or ``rejoin_as_standby_of``."""
        first_line = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        postmaster = int(first_line)
        children = [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _parent_of(entry) == postmaster
        ]
        for pid in (postmaster, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def rejoin_as_standby_of(self, primary: PostgresServer) -> None:
        """Start this (old, stopped or killed) primary again as a standby of ``primary``, the
        documented way back after a failover: in recovery it takes no writes, so clients whose URL
        says ``target_session_attrs=read-write`` pass it by."""
        (self.data / "standby.signal").touch()
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres'\n")
        if self._as_postgres:
            shutil.chown(self.data / "standby.signal", "postgres", "postgres")
        self.start_server()

    def stop_server(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected) but keep its data."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        """Stop the server and delete its folder. Idempotent."""
        if self.folder is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                with contextlib.suppress(PostgresUnavailableError):  # killed: nothing left to stop
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def create_database(self, name: str) -> str:
        """Create a database and return its SQLAlchemy URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, PostgresUnavailableError):
            return ""

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.bin_dir / program), *arguments]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")
        if result.returncode != 0:
            output = result.stderr.strip() or result.stdout.strip()
            raise PostgresUnavailableError(
                f"{program} failed with exit code {result.returncode}: {output}"
                f"\n--- server log ---\n{self.log()[-4000:]}"
            )


def _parent_of(process: Path) -> int | None:
    try:
        return int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class ExistingPostgres:
    """A server someone else runs, named by ``ES_TEST_POSTGRES_URL`` (a SQLAlchemy URL whose user
    may create databases). Tests create their databases in it; nothing is stopped or removed."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url  # a dependency of uwsgi_es anyway

        self.base_url = make_url(url)
        self.port = self.base_url.port or 5432

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return self.base_url.set(drivername=driver, database=database).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(self.base_url.database or "postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)
