"""Shared fixtures: a clean environment, a migrated SQLite file, and a clean registry per test."""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from uwsgi_es import close_application
from uwsgi_es.cli import migrate
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store
from uwsgi_es.testing import PostgresServer, free_port
from uwsgi_es.testing.cassandra import CassandraNode
from uwsgi_es.testing.pgbouncer import PgBouncer
from uwsgi_es.testing.postgres import ExistingPostgres

from .support.paths import PROJECT


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No UWSGI_ES_* setting of the developer's shell leaks into a test; no application outlives it."""
    for name in list(os.environ):
        if name.startswith("UWSGI_ES_"):
            monkeypatch.delenv(name)
    yield
    close_application()


# What the suite's databases are migrated for: the example, whose balances read model uwsgi.ini's
# projection mule keeps (as `make run` migrates).
EXAMPLE = "uwsgi_es.example.domain:BankAccounts"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file database with the schema created, as `uwsgi-es migrate` would."""
    url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    migrate(Settings(database_url=url, application=EXAMPLE))
    return url


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return Settings(database_url=sqlite_url)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | ExistingPostgres]:
    """One throwaway PostgreSQL server for the session, or the server ES_TEST_POSTGRES_URL names.
    Never skipped: if it cannot start, the tests that need it fail with its log (`make test`
    installs the server binaries when root)."""
    existing = os.environ.get("ES_TEST_POSTGRES_URL")
    if existing:
        yield ExistingPostgres(existing)
        return
    with PostgresServer() as server:
        yield server


_database_numbers = itertools.count()


@pytest.fixture
def postgres_url(postgres: PostgresServer | ExistingPostgres) -> Iterator[str]:
    """A new, empty, migrated PostgreSQL database for one test. After the test, a collection finds
    any connection it left open (psycopg's ResourceWarning, an error here) in this test's teardown,
    not in whichever later test the garbage collector happens to run in."""
    url = postgres.create_database(f"test_{os.getpid()}_{next(_database_numbers)}")
    migrate(Settings(database_url=url, application=EXAMPLE))
    yield url
    gc.collect()


# The server connections PgBouncer keeps per database: few, so that the suite's clients share
# them and each transaction may land on another (what transaction pooling is for).
PGBOUNCER_POOL = "3"


@pytest.fixture(scope="session")
def pgbouncer(postgres: PostgresServer | ExistingPostgres) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling (deploy/pgbouncer.ini) in front of the session's PostgreSQL.
    Never skipped: if it cannot start, the tests that need it fail with its log."""
    port = make_url(postgres.url()).port or 5432
    with PgBouncer(
        port, PROJECT / "deploy" / "pgbouncer.ini", overrides={"default_pool_size": PGBOUNCER_POOL}
    ) as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_url(pgbouncer: PgBouncer, postgres_url: str) -> str:
    """A new, migrated database (``postgres_url``'s), reached through PgBouncer."""
    return pgbouncer.url(str(make_url(postgres_url).database))


@pytest.fixture(scope="session")
def cassandra() -> Iterator[CassandraNode]:
    """One real Cassandra node for the session (fetched from Maven Central once, then cached in
    .cache/cassandra). Never skipped: if it cannot start, its tests fail with the node's log."""
    with CassandraNode(PROJECT / ".cache" / "cassandra") as node:
        print(f"Cassandra {node.version} answered CQL after {node.startup_seconds:.1f}s")
        yield node


@pytest.fixture
def cassandra_settings(cassandra: CassandraNode) -> Settings:
    """Settings for a new keyspace with the table created, as `uwsgi-es migrate` would."""
    settings = Settings(
        store="cassandra",
        cassandra_port=cassandra.native_port,
        cassandra_keyspace=f"test_{os.getpid()}_{next(_database_numbers)}",
    )
    store = create_record_store(settings)
    store.create_schema()
    store.close()
    return settings


@pytest.fixture
def cassandra_env(cassandra_settings: Settings) -> dict[str, str]:
    """The environment a worker needs to use that keyspace."""
    return {
        "UWSGI_ES_STORE": "cassandra",
        "UWSGI_ES_CASSANDRA_PORT": str(cassandra_settings.cassandra_port),
        "UWSGI_ES_CASSANDRA_KEYSPACE": cassandra_settings.cassandra_keyspace,
    }


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free port (Debian's redis-server; `make test` installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is missing: apt-get install redis-server (`make test` does, as root)"
        )
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                break
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"redis-server did not answer on port {port}")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
