"""The servers uWSGI users move to, started for real for tests and benchmarks: uvicorn
(``--workers``), granian (its ASGI and WSGI interfaces) and gunicorn's ASGI worker, with the
command lines the README gives. ``AsgiServer`` is a ``UwsgiServer`` in all but the command: the
same HTTP helpers, log and start-up wait; stopped with SIGTERM (each server's graceful stop, which
runs the lifespan's shutdown).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from uwsgi_es.testing.uwsgi_server import UwsgiServer

ASGI = "uwsgi_es.asgi:application"
WSGI = "uwsgi_es.wsgi:application"
SERVERS = ("uvicorn", "granian asgi", "granian wsgi", "gunicorn asgi")


def server_command(
    server: str, port: int, target: str | None = None, *, workers: int = 4, extra: Sequence[str] = ()
) -> list[str]:
    """The command line of ``server`` (one of ``SERVERS``) serving ``target`` on ``port``."""
    binaries = Path(sys.executable).parent
    if server == "uvicorn":
        return [
            str(binaries / "uvicorn"),
            target or ASGI,
            "--workers",
            str(workers),
            "--port",
            str(port),
            *extra,
        ]
    if server in ("granian asgi", "granian wsgi"):
        interface = server.split()[1]
        return [
            str(binaries / "granian"),
            "--interface",
            interface,
            "--workers",
            str(workers),
            "--respawn-failed-workers",
            "--port",
            str(port),
            *extra,
            target or (ASGI if interface == "asgi" else WSGI),
        ]
    if server == "gunicorn asgi":
        return [
            str(binaries / "gunicorn"),
            "--worker-class",
            "asgi",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            *extra,
            target or ASGI,
        ]
    raise ValueError(f"{server!r} is not one of {', '.join(SERVERS)}")


class AsgiServer(UwsgiServer):
    """One real ``server`` (uvicorn, granian, gunicorn's ASGI worker) with ``workers`` workers."""

    stop_signal = signal.SIGTERM  # each server's graceful stop, which runs the lifespan's shutdown

    def __init__(
        self,
        server: str,
        target: str | None = None,
        *,
        workers: int = 4,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        log_name: str = "server.log",
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            env=env,
            cwd=cwd,
            log_dir=log_dir,
            wait_for="health",
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            uwsgi_binary=server,  # never run: the command is the server's
            add_http=False,
        )
        self.server, self.target, self.workers, self.extra = server, target, workers, list(extra)
        self.log_path = self.log_dir / log_name

    def command(self) -> list[str]:
        return server_command(self.server, self.port, self.target, workers=self.workers, extra=self.extra)

    def worker_pids(self) -> list[int]:
        """Every process below the server's parent (its workers, and any helper it started)."""
        found: list[int] = []
        pending = [self.pid]
        while pending:
            pid = pending.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += map(int, children)
            pending += map(int, children)
        return found
