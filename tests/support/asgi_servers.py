"""The servers uWSGI users move to, as the tests start them: ``uwsgi_es.testing.AsgiServer`` with 4
workers, serving the bank example (``uwsgi_es.asgi:application``; granian's WSGI interface:
``uwsgi_es.wsgi:application``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from uwsgi_es.testing.asgi_servers import SERVERS, AsgiServer

from .paths import PROJECT

WORKERS = 4
BANK = "uwsgi_es.example.domain:BankAccounts"
__all__ = ["SERVERS", "WORKERS", "serving"]


@contextlib.contextmanager
def serving(
    server: str, env: dict[str, str], log: Path, *extra: str, target: str | None = None
) -> Iterator[AsgiServer]:
    """``server`` running until the block ends (then SIGTERM, and its exit awaited)."""
    started = AsgiServer(
        server,
        target,
        workers=WORKERS,
        extra=extra,
        env={"UWSGI_ES_APPLICATION": BANK, **env},
        cwd=PROJECT,
        log_dir=log.parent,
        log_name=log.name,
    )
    with started:
        yield started
