"""The library-written bank (examples/eventsourcing_bank) from the tests' side: its tables made as a
deployment makes them (``uwsgi-es migrate``), and the application built in the test process to
look at what the servers' processes stored."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uwsgi_es.testing import PostgresServer
from uwsgi_es.testing.postgres import ExistingPostgres

from .paths import PROJECT

APPLICATION = "examples.eventsourcing_bank.application:BankAccounts"


def uwsgi_es(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI, as a deployment script runs it."""
    full = {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(PROJECT),
        "UWSGI_ES_APPLICATION": APPLICATION,
        **env,
    }
    script = Path(sys.executable).parent / "uwsgi-es"
    return subprocess.run(
        [script, command], env=full, cwd=PROJECT, capture_output=True, text=True, check=False
    )


def migrate(env: dict[str, str]) -> None:
    result = uwsgi_es("migrate", env)
    assert result.returncode == 0, result.stderr
    assert "schema ready for BankAccounts" in result.stdout, result.stdout


def sqlite_env(path: Path) -> dict[str, str]:
    """The library's environment for its SQLite module, on the file ``path``."""
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment (where the library reads its settings), then as before."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def library_app(env: dict[str, str]) -> Iterator[Any]:
    """The application built in this test process (closed as a worker closes it)."""
    from examples.eventsourcing_bank.application import BankAccounts
    from uwsgi_es.integrations.eventsourcing import construct, hosting

    with environment(env):
        app = construct(BankAccounts)
    try:
        yield app
    finally:
        hosting(app).close()


_numbers = itertools.count()


def postgres_env(server: PostgresServer | ExistingPostgres) -> dict[str, str]:
    """The library's environment for its PostgreSQL module, on a new database of ``server``."""
    name = f"es_{os.getpid()}_{next(_numbers)}"
    server.create_database(name)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": name,
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(server.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "unused-by-trust-auth",
    }


@contextmanager
def running(app: Any, name: str, settings: Any) -> Iterator[Any]:
    """The runner a mule builds for the declared projection ``name`` over ``app``, closed after."""
    from uwsgi_es.integrations.eventsourcing import projection_runner

    runner = projection_runner(app, name, settings)
    try:
        yield runner
    finally:
        runner.close()


def recorded(runner: Any) -> list[Any]:
    """The events an event-sourced projection (a follower) recorded in its own store."""
    projection = runner.projection
    return [projection.mapper.to_domain_event(n) for n in projection.recorder.select_notifications(None, 100)]
