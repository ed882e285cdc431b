"""A throwaway PgBouncer in front of a test PostgreSQL: a free port, a temporary folder, gone after.

It reads a PgBouncer ini (ours is ``deploy/pgbouncer.ini``) and changes only what a test must:
the port, the folder of its files, the server behind (every database of it), and authentication
(``trust``: the user ``postgres`` with no password). Everything else, the pool mode above all,
is the file's. Debian's ``pgbouncer`` package provides the binary; as root it runs as the
``postgres`` user (PgBouncer refuses root). Standard library only.
"""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.testing.processes import StartStop, free_port

INSTALL_HINT = (
    "PgBouncer was not found. On Debian/Ubuntu: sudo apt-get install pgbouncer (`make test` does this "
    "itself when run as root)."
)
START_SECONDS = 10


class PgBouncerUnavailableError(UwsgiEsError, RuntimeError):
    """PgBouncer could not be found or started; the message ends with its log."""


def find_pgbouncer() -> Path:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise PgBouncerUnavailableError(INSTALL_HINT)
    return Path(found)


class PgBouncer(StartStop):
    """PgBouncer on 127.0.0.1 and a free port, pooling every database of the server at
    ``server_port`` with the settings of ``config`` (an ini file) and ``overrides``."""

    def __init__(self, server_port: int, config: Path, *, overrides: Mapping[str, str] | None = None) -> None:
        self.server_port = server_port
        self.config = config
        self.overrides = dict(overrides or {})
        self.port = 0
        self.folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        if self.folder is None:
            raise PgBouncerUnavailableError("PgBouncer was never started")
        return self.folder / "pgbouncer.log"

    def settings(self) -> dict[str, str]:
        """The [pgbouncer] section as started."""
        return dict(self._ini()["pgbouncer"])

    def start(self) -> Self:
        binary = find_pgbouncer()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="uwsgi_es-pgbouncer-"))
        ini = self._ini()
        (self.folder / "userlist.txt").write_text('"postgres" ""\n')
        path = self.folder / "pgbouncer.ini"
        with path.open("w") as file:
            ini.write(file)
        command = [str(binary), str(path)]
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
            for child in self.folder.iterdir():
                shutil.chown(child, "postgres", "postgres")
            command = [str(binary), "-u", "postgres", str(path)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd="/"
        )
        deadline = time.monotonic() + START_SECONDS
        while not self._accepts():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.log()
                self.stop()
                raise PgBouncerUnavailableError(
                    f"PgBouncer did not start on port {self.port}:\n{log[-4000:]}"
                )
            time.sleep(0.05)
        return self

    def _ini(self) -> configparser.ConfigParser:
        ini = configparser.ConfigParser(delimiters=("=",), comment_prefixes=(";", "#"), interpolation=None)
        ini.read(self.config)
        folder = self.log_path.parent
        ini["databases"] = {"*": f"host=127.0.0.1 port={self.server_port}"}
        ini["pgbouncer"].update(
            {
                "listen_addr": "127.0.0.1",
                "listen_port": str(self.port),
                "unix_socket_dir": "",
                "auth_type": "trust",
                "auth_file": str(folder / "userlist.txt"),
                "logfile": str(folder / "pgbouncer.log"),
                "pidfile": str(folder / "pgbouncer.pid"),
                **self.overrides,
            }
        )
        return ini

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, PgBouncerUnavailableError):
            return ""

    def stop(self) -> None:
        """Stop PgBouncer at once (its clients are disconnected) and delete its folder. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # immediate shutdown; SIGINT would wait for clients
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
