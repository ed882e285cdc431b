"""What wakes a projection runner when events are appended, and the bound on how late it may be.

A wake-up is only a hint: the runner always reads the feed itself, and waits at most
``UWSGI_ES_READSIDE_POLL_INTERVAL`` for one, so a lost wake-up (a notification dropped with its
connection) costs at most that interval, never an event.

- PostgreSQL: the runner reads the feed every poll interval (0.1 s by default), and ``LISTEN``s on
  a connection of its own (``application_name`` "uwsgi_es readside") for ``NOTIFY
  uwsgi_es_events``, which a read waiting for its own write sends (``X-Min-Position``). Appends
  do not notify: notifying transactions commit one at a time, and writers must never queue. If
  the LISTEN connection dies, the runner polls until it is back. Through a transaction pooler
  (PgBouncer) a LISTEN is lost with the transaction that sent it: the runner LISTENs on
  ``UWSGI_ES_LISTEN_URL`` (a direct connection) when set, and otherwise only polls, and says so.
- SQLite has no notifications: the runner asks ``PRAGMA data_version`` every 10 ms, which changes
  when another connection commits (a read of shared memory, no disk access).

``arm()`` is called before each read of the feed and ``wait()`` after a read that found nothing,
so an append that commits in between is never slept through.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from uwsgi_es.runtime import log
from uwsgi_es.stores.base import FEED_CHANNEL
from uwsgi_es.stores.sqlalchemy.engine import is_pooled

LISTENER_NAME = "uwsgi_es readside"
SQLITE_CHECK_SECONDS = 0.01
STOP_CHECK_SECONDS = 0.5


class Waker(Protocol):
    def arm(self) -> None:
        """Called before the runner reads the feed: what commits after this wakes ``wait``."""

    def wait(self, stop: threading.Event) -> None:
        """Return after an append committed since ``arm``, at the poll interval, or at ``stop``."""

    def close(self) -> None: ...


def waker_for(engine: Engine, poll_interval: float, listen_url: str = "") -> Waker:
    if engine.dialect.name == "postgresql":
        if listen_url:
            return PostgresWaker(create_engine(listen_url, poolclass=NullPool), poll_interval, owned=True)
        return PostgresWaker(engine, poll_interval)
    if engine.dialect.name == "sqlite":
        return SqliteWaker(engine, poll_interval)
    return PollingWaker(poll_interval)


class PollingWaker:
    """No wake-ups: read the feed at the poll interval."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval

    def arm(self) -> None:
        pass

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.poll_interval)

    def close(self) -> None:
        pass


class PostgresWaker:
    """LISTEN on the feed's channel, on a connection of its own (autocommit)."""

    def __init__(self, engine: Engine, poll_interval: float, *, owned: bool = False) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self._owned = owned  # an engine of its own (UWSGI_ES_LISTEN_URL), disposed on close
        self._connection: Connection | None = None
        self._polling_only = False  # the engine goes through a transaction pooler

    def _pooled(self, connection: Connection) -> bool:
        if not is_pooled(connection):
            return False
        self._polling_only = True
        log.emit(
            "readside_polling",
            logging.WARNING,
            reason="the database URL goes through a transaction pooler (PgBouncer): "
            "a LISTEN would not outlast its transaction",
            consequence=f"reading the feed every {self.poll_interval}s; set UWSGI_ES_LISTEN_URL to a "
            "direct URL to be woken at once",
        )
        return True

    def _driver(self) -> Any:
        """The psycopg connection that LISTENs, made (again) when there is none."""
        if self._connection is None:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                if self._pooled(connection):
                    connection.close()
                    return None
                connection.exec_driver_sql(f"SET application_name = '{LISTENER_NAME}'")
                connection.exec_driver_sql(f"LISTEN {FEED_CHANNEL}")
            except BaseException:
                connection.close()
                raise
            self._connection = connection
            log.emit("readside_listening", channel=FEED_CHANNEL)
        return self._connection.connection.driver_connection

    def arm(self) -> None:
        """Listen (again, if the connection was lost) and drop the wake-ups already delivered: the
        read that follows sees what they announced."""
        if self._polling_only:
            return
        try:
            driver = self._driver()
            if driver is None:
                return
            for _ in driver.notifies(timeout=0, stop_after=None):
                pass
        except Exception as exc:  # psycopg.OperationalError (terminated), SQLAlchemy errors, OSError
            self._lost(exc)

    def wait(self, stop: threading.Event) -> None:
        if self._connection is None:  # lost: poll, and listen again at the next arm()
            stop.wait(self.poll_interval)
            return
        deadline = time.monotonic() + self.poll_interval
        try:
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                # In slices, so that `stop` is seen within STOP_CHECK_SECONDS.
                for _ in self._driver().notifies(timeout=min(left, STOP_CHECK_SECONDS), stop_after=1):
                    return
        except Exception as exc:
            self._lost(exc)
            stop.wait(max(0.0, deadline - time.monotonic()))

    def _lost(self, exc: BaseException) -> None:
        log.emit(
            "readside_listener_lost",
            logging.WARNING,
            error=f"{type(exc).__name__}: {exc}".strip(),
            consequence=f"polling every {self.poll_interval}s until it listens again",
        )
        self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            driver = connection.connection.driver_connection
            try:
                connection.invalidate()  # never back into the pool: it may be broken, and it LISTENs
                connection.close()
            except Exception as exc:  # a dead connection may fail to close: it is gone either way
                log.emit("readside_listener_closed", logging.DEBUG, error=type(exc).__name__)
            finally:
                # A connection the server terminated is not always closed by the pool's
                # invalidation; close the driver's own so nothing is left to the garbage collector.
                if driver is not None and not driver.closed:
                    driver.close()
        if self._owned:  # a disposed engine connects again when asked: a lost LISTEN comes back
            self.engine.dispose()


class SqliteWaker:
    """Watch ``PRAGMA data_version`` on a connection of its own."""

    def __init__(self, engine: Engine, poll_interval: float) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self._raw: Any = None
        self._version: int | None = None

    def _data_version(self) -> int | None:
        try:
            if self._raw is None:
                self._raw = self.engine.raw_connection()
            cursor = self._raw.cursor()
            try:
                cursor.execute("PRAGMA data_version")
                return int(cursor.fetchone()[0])
            finally:
                cursor.close()
        except Exception:  # the file is away (deleted, locked): the runner's own read will say why
            self.close()
            return None

    def arm(self) -> None:
        self._version = self._data_version()

    def wait(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.poll_interval
        while not stop.is_set() and time.monotonic() < deadline:
            if stop.wait(SQLITE_CHECK_SECONDS):
                return
            version = self._data_version()
            if version is None or version != self._version:
                return

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.close()
            except Exception:  # best effort: a broken connection is gone either way
                return
