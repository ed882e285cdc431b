"""PostgreSQL sessions opened beside the server under test: the transactions that used to stall
the feed (issue 29 item 3), held open until the test is done with them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from uuid import uuid4

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from uwsgi_es.testing import PostgresServer
from uwsgi_es.testing.postgres import ExistingPostgres


@contextmanager
def held_open(engine: Engine, statement: str) -> Iterator[Connection]:
    """A session of ``engine`` inside a transaction that ran ``statement`` and now idles."""
    with engine.connect() as connection:
        connection.execute(text(statement))
        yield connection
        connection.rollback()


@contextmanager
def sleeping(engine: Engine, seconds: int = 600) -> Iterator[None]:
    """A session of ``engine`` running ``SELECT pg_sleep(seconds)`` (a snapshot held, no
    transaction id), cancelled on the way out."""
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        connection.commit()
        cancelled: list[str] = []

        def sleep() -> None:
            try:
                connection.execute(text(f"SELECT pg_sleep({seconds})"))
            except DBAPIError as exc:
                cancelled.append(str(exc.orig))

        sleeper = threading.Thread(target=sleep)
        sleeper.start()
        with engine.connect() as watcher:
            deadline = time.monotonic() + 10
            running = text("SELECT state = 'active' FROM pg_stat_activity WHERE pid = :pid")
            while not watcher.execute(running, {"pid": pid}).scalar():
                assert time.monotonic() < deadline, "pg_sleep did not start"
                watcher.rollback()
                time.sleep(0.01)
        try:
            yield
        finally:
            with engine.connect() as canceller:
                canceller.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})
            sleeper.join(10)
            connection.rollback()
        assert len(cancelled) == 1, cancelled
        assert "canceling statement" in cancelled[0]


@contextmanager
def outside_transactions(postgres: PostgresServer | ExistingPostgres, url: str) -> Iterator[None]:
    """What stalled the feed in production: in another database of the server a session holding a
    transaction id and idling, another running pg_sleep; in this database one that wrote (a row of
    its own table, no event) and idles."""
    with ExitStack() as stack:
        other = create_engine(postgres.create_database(f"other_{uuid4().hex[:8]}"))
        this = create_engine(url)
        stack.callback(other.dispose)
        stack.callback(this.dispose)
        with this.begin() as connection:
            connection.execute(text("CREATE TABLE IF NOT EXISTS outside_work (n integer)"))
        stack.enter_context(held_open(other, "SELECT txid_current()"))
        stack.enter_context(sleeping(other))
        stack.enter_context(held_open(this, "INSERT INTO outside_work VALUES (1)"))
        yield
