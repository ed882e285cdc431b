"""The servers uWSGI users move to, started for real as the README's command lines start them:
uvicorn (``--workers``), granian (ASGI and WSGI interfaces) and gunicorn's ASGI worker, each with
4 workers, serving the bank example (``uwsgi_es.asgi:application``; granian's WSGI interface:
``uwsgi_es.wsgi:application``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from uwsgi_es.testing import UwsgiServer, free_port

from .paths import PROJECT

BIN = Path(sys.executable).parent
ASGI = "uwsgi_es.asgi:application"
WSGI = "uwsgi_es.wsgi:application"
WORKERS = 4
SERVERS = ["uvicorn", "granian asgi", "granian wsgi", "gunicorn asgi"]


def command(server: str, port: int, *extra: str, target: str | None = None) -> list[str]:
    """The command line of ``server`` as the README gives it, on ``port``."""
    if server == "uvicorn":
        return [str(BIN / "uvicorn"), target or ASGI, "--workers", str(WORKERS), "--port", str(port), *extra]
    if server.startswith("granian"):
        interface = server.split()[1]
        default = ASGI if interface == "asgi" else WSGI
        return [
            str(BIN / "granian"),
            "--interface",
            interface,
            "--workers",
            str(WORKERS),
            "--respawn-failed-workers",
            "--port",
            str(port),
            *extra,
            target or default,
        ]
    if server == "gunicorn asgi":
        return [
            str(BIN / "gunicorn"),
            "--worker-class",
            "asgi",
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            *extra,
            target or ASGI,
        ]
    raise ValueError(server)


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    client: UwsgiServer  # for its HTTP helpers (get, post, port)
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serving(
    server: str, env: dict[str, str], log: Path, *extra: str, target: str | None = None
) -> Iterator[Served]:
    """``server`` running the example until the block ends (then SIGTERM, and its exit awaited)."""
    port = free_port()
    client = UwsgiServer(options=[], log_dir=log.parent, wait_for="nothing")
    client.port = port
    full_env = {
        **os.environ,
        "UWSGI_ES_APPLICATION": "uwsgi_es.example.domain:BankAccounts",
        **env,
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command(server, port, *extra, target=target),
            cwd=PROJECT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(process, client, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, served.text()
            with contextlib.suppress(OSError):
                if client.get("/health", timeout=2).status == 200:
                    break
            assert time.monotonic() < deadline, served.text()
            time.sleep(0.05)
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
