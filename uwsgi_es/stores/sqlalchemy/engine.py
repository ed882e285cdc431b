"""Engines for the SQL store, made in the process that uses them, and what their errors mean.

- SQLite: WAL, a busy timeout, ``synchronous=FULL``, and ``BEGIN IMMEDIATE`` for writes (a deferred
  transaction that upgrades to a write can fail with "database is locked" whatever the timeout).
  The file is opened with ``mode=rw``: a worker never creates a database (``uwsgi-es migrate`` does),
  so a missing file is reported, not silently replaced by an empty one. Each connection remembers
  which file (device, inode) it opened, so the store can tell when the file was deleted or replaced
  under it. A connection SQLite opened read-only stays read-only for good, so a "readonly" error
  retires the pool's connections: the next attempt reopens the file, and writes resume when it is
  writable again.
- PostgreSQL: every connection waits at most ``UWSGI_ES_LOCK_TIMEOUT`` for a lock (``lock_timeout``),
  so a session holding the events table (``CREATE INDEX``) delays requests, never hangs them; a
  statement runs at most ``UWSGI_ES_STATEMENT_TIMEOUT``, and a session that stalls inside a
  transaction (holding the append lock) is ended by the server after
  ``UWSGI_ES_IDLE_IN_TRANSACTION_TIMEOUT``, so the other writers go on. Each connection's
  ``application_name`` says whose it is (``uwsgi_es worker 3 pid 1234``) in ``pg_stat_activity``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from uwsgi_es.errors import (
    ConfigurationError,
    SchemaMissingError,
    StoreBusyError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from uwsgi_es.lifecycle import process
from uwsgi_es.metrics import recorder
from uwsgi_es.redaction import redact_url
from uwsgi_es.settings import PREFIX, Settings, missing_driver, parse_database_url

WRITE = "uwsgi_es_write"  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)
FILE_IDENTITY = "uwsgi_es_file"  # connection info key: (device, inode) of the file SQLite opened

# PostgreSQL SQLSTATEs we tell apart (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_UNDEFINED_TABLE = "42P01"
_LOCK_NOT_AVAILABLE = "55P03"
_READ_ONLY_TRANSACTION = "25006"
_DISK_FULL = "53100"
# idle_in_transaction_session_timeout, admin shutdown (pg_terminate_backend), crash and cannot-connect-now
_SESSION_ENDED = frozenset({"25P03", "57P01", "57P02", "57P03"})
_SQLITE_READONLY = ("readonly database", "read-only")
_SQLITE_FULL = "database or disk is full"


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = url.database
    if database in (None, "", ":memory:") or str(database).startswith("file::memory:"):
        return None
    return Path(str(database))


def create_engine_from_settings(settings: Settings) -> Engine:
    """An engine for this process. Call it after the fork, never in the uWSGI master.

    The URL is read as ``UWSGI_ES_DATABASE_URL`` is (``uwsgi_es.settings.parse_database_url``:
    postgresql:// means psycopg 3, a malformed URL is a ConfigurationError), also when ``settings``
    were made in code rather than from the environment; that parse only imports the driver."""
    url = make_url(parse_database_url(f"{PREFIX}DATABASE_URL", settings.database_url))
    if url.get_backend_name() == "sqlite":
        engine = _create_sqlite_engine(settings, url)
    else:
        engine = _create_postgres_engine(settings, url)
    event.listen(engine, "checkout", _counted_checkout)
    return engine


def _counted_checkout(*_: Any) -> None:
    recorder.pool_checkout()


def _create_postgres_engine(settings: Settings, url: URL) -> Engine:
    connect_args: dict[str, Any] = {"connect_timeout": settings.connect_timeout}
    if "application_name" not in url.query:  # the operator's own name wins
        connect_args["application_name"] = connection_name()
    try:
        engine = create_engine(
            url,
            connect_args=connect_args,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_recycle=settings.pool_recycle,
            pool_pre_ping=settings.pool_pre_ping,
        )
    except ImportError as exc:  # checked by parse_database_url already; kept for a driver's late import
        raise ConfigurationError(missing_driver(f"{PREFIX}DATABASE_URL", url, exc)) from exc
    guards = "; ".join(
        f"SET {name} = {milliseconds}"
        for name, milliseconds in (
            ("lock_timeout", max(1, round(settings.lock_timeout * 1000))),
            ("statement_timeout", round(settings.statement_timeout * 1000)),
            ("idle_in_transaction_session_timeout", round(settings.idle_in_transaction_timeout * 1000)),
        )
    )

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # The server ended the session (a guard's timeout, pg_terminate_backend, a shutdown): the
        # connection is gone, so retire it (closed now, never back into the pool).
        if getattr(context.original_exception, "sqlstate", None) in _SESSION_ENDED:
            context.is_disconnect = True

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(guards)  # one round trip for the three session guards
        finally:
            cursor.close()
        dbapi_connection.commit()  # psycopg opened a transaction for the SET: end it

    return engine


def connection_name() -> str:
    """``uwsgi_es worker 3 pid 1234``: who holds a connection, as ``pg_stat_activity`` shows it
    (made when the engine is, in the process that uses it; PostgreSQL keeps 63 bytes)."""
    return f"uwsgi_es {process.role()} pid {os.getpid()}"[:63]


def _create_sqlite_engine(settings: Settings, url: URL) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        # A file: URI with mode=rw: SQLite must not create a missing file (migrate does that).
        uri = f"file:{quote(str(path))}"
        url = url.set(database=uri, query={**url.query, "mode": "rw", "uri": "true"})
    engine = create_engine(url, connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000})
    busy_timeout = settings.sqlite_busy_timeout_ms

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Take transaction control from the sqlite3 module, so "begin" below decides the BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if path is not None:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()
        if path is not None:
            record.info[FILE_IDENTITY] = file_identity(path)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(WRITE):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # A connection SQLite opened read-only never becomes writable: retire it (and its pool
        # siblings), so the next attempt reopens the file and sees it writable again.
        if isinstance(context.original_exception, sqlite3.OperationalError) and any(
            words in str(context.original_exception) for words in _SQLITE_READONLY
        ):
            context.is_disconnect = True

    return engine


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path`` now; None when there is none."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_dev, status.st_ino)


def translate(exc: DBAPIError, where: str, scrub: Any) -> StoreUnavailableError:
    """Our error for a driver's operational error, its message scrubbed of secrets."""
    original = exc.orig
    detail = scrub(original)
    sqlstate = getattr(original, "sqlstate", None)
    text = str(original)
    if sqlstate == _UNDEFINED_TABLE or "no such table" in text:
        return SchemaMissingError(
            f"A table of uwsgi_es does not exist in {where} ({detail}). "
            "Create the tables once per deployment with: uwsgi-es migrate"
        )
    if sqlstate == _LOCK_NOT_AVAILABLE or "database is locked" in text:
        return StoreBusyError(
            f"{where} is busy: waiting for a lock timed out ({detail}). Another session holds the "
            "events table (e.g. a CREATE INDEX); the bound is UWSGI_ES_LOCK_TIMEOUT "
            "(UWSGI_ES_SQLITE_BUSY_TIMEOUT_MS on SQLite)."
        )
    if (
        sqlstate in (_READ_ONLY_TRANSACTION, _DISK_FULL)
        or _SQLITE_FULL in text
        or any(words in text for words in _SQLITE_READONLY)
    ):
        return StoreReadOnlyError(f"{where} does not accept writes now ({detail}).")
    return StoreUnavailableError(f"{where} is unavailable: {detail}")


def describe_url(url: URL) -> str:
    """The engine's URL as it may be shown (passwords masked)."""
    return redact_url(url)
