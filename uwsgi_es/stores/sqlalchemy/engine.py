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
- PostgreSQL behind a transaction pooler (PgBouncer ``pool_mode = transaction``): each transaction
  may run on another server connection, so nothing may rely on session state. A connection is
  known to be pooled when the backend key the pooler gave it names another process than the one
  answering (``pg_backend_pid()``): PostgreSQL itself always gives the answering backend's pid.
  Then psycopg prepares no statements (a name prepared on one server connection is unknown, or
  names another statement, on the next), no guard is set for the session, and every transaction
  starts by setting the three guards for itself (``SET LOCAL``); the store runs no statement in
  autocommit there (``is_pooled``).
- Both: the wait of each statement for a lock is capped at what is left of its request's deadline
  (``uwsgi_es.stores.deadlines``: PostgreSQL's ``lock_timeout``, SQLite's busy timeout, changed
  only when the cap differs), and a statement that would start past it is not sent
  (``DeadlinePassedError``). Under uWSGI's gevent loop the pool's wait for a free connection yields
  to the worker's other greenlets (they are the ones holding the connections) and gives up after
  ``UWSGI_ES_POOL_TIMEOUT`` (``PoolExhaustedError``, 503).
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from uwsgi_es.errors import (
    ConfigurationError,
    DeadlinePassedError,
    PoolExhaustedError,
    SchemaMissingError,
    StoreBusyError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from uwsgi_es.metrics import recorder
from uwsgi_es.redaction import redact_url
from uwsgi_es.runtime import log, process
from uwsgi_es.settings import PREFIX, Settings, missing_driver, parse_database_url
from uwsgi_es.stores import deadlines

WRITE = "uwsgi_es_write"  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)
FILE_IDENTITY = "uwsgi_es_file"  # connection info key: (device, inode) of the file SQLite opened
LOCK_BOUND = "uwsgi_es_lock_bound"  # engine execution option: seconds a request may wait for locks
_WAIT_MS = "uwsgi_es_wait_ms"  # connection info key: the session's lock wait bound now (ms)
_LOCAL_WAIT_MS = "uwsgi_es_local_wait_ms"  # ... (transaction, ms) set for one transaction only
POOLED = "uwsgi_es_pooled"  # connection info key: reached through a transaction pooler (PgBouncer)
_GUARDED = "uwsgi_es_guarded"  # connection info key: the transaction whose guards were set (pooled)
# A cap within this many ms of the one in force is left as it is (no round trip to change it).
_CAP_SLACK_MS = 20
# How often a wait for a free pooled connection looks again, under gevent.
_POOL_POLL_SECONDS = 0.002
# Statements that end a transaction or savepoint: never refused, never preceded by a SET (in an
# aborted transaction nothing else may be sent).
_ENDINGS = ("ROLLBACK", "RELEASE", "COMMIT")

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


def lock_bound(engine: Engine) -> float | None:
    """Seconds a request may wait for locks on this engine (None: not an engine of ours)."""
    bound = engine.get_execution_options().get(LOCK_BOUND)
    return None if bound is None else float(bound)


class _YieldingQueuePool(QueuePool):
    """A ``QueuePool`` whose wait for a free connection, under uWSGI's gevent loop, lets the worker's
    other greenlets run: they hold the connections, and a wait on the pool's thread condition would
    stop them all, so none would be given back before the pool timeout. Elsewhere it waits as
    ``QueuePool`` does (other threads give connections back)."""

    def _do_get(self) -> ConnectionPoolEntry:
        if self._max_overflow > -1 and process.option("gevent"):
            deadline = time.monotonic() + self._timeout
            while self.checkedin() == 0 and self._overflow >= self._max_overflow:
                if time.monotonic() >= deadline:
                    raise PoolTimeoutError(
                        f"QueuePool limit of size {self.size()} overflow {self._max_overflow} reached, "
                        f"connection timed out, timeout {self._timeout:.2f}",
                        code="3o7r",
                    )
                process.pause(_POOL_POLL_SECONDS)
        return super()._do_get()


def pool_exhausted(engine: Engine, where: str) -> PoolExhaustedError:
    """Our error for the pool's ``TimeoutError``: a 503 naming the pool and its settings."""
    pool = engine.pool
    size = pool.size() if isinstance(pool, QueuePool) else 1
    overflow = pool._max_overflow if isinstance(pool, QueuePool) else 0
    timeout = pool._timeout if isinstance(pool, QueuePool) else 0.0
    return PoolExhaustedError(
        f"{where} is busy: all {size} pooled connections of this process and {max(0, overflow)} "
        f"overflow ones stayed in use for {timeout:g}s (UWSGI_ES_POOL_TIMEOUT). Raise "
        "UWSGI_ES_POOL_SIZE or UWSGI_ES_MAX_OVERFLOW if requests need more at once, or find what "
        "holds them (/worker shows the pool)."
    )


def _capped_wait_ms(bound: float, setting: str, url: URL) -> int:
    """The longest the next statement may wait for a lock (ms): what is left of its request's
    bound; ``DeadlinePassedError`` when nothing is (the statement is then not sent)."""
    limit = deadlines.wait_limit(bound)
    if limit <= 0:
        raise DeadlinePassedError(
            f"The database at {describe_url(url)} was not asked: this request had already waited "
            f"{bound:g}s ({setting}) for the database, behind this worker's other requests, so "
            "nothing more was done or stored. Retry shortly."
        )
    return max(1, min(round(bound * 1000), math.ceil(limit * 1000)))


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
            poolclass=_YieldingQueuePool,
            execution_options={LOCK_BOUND: settings.lock_timeout},
        )
    except ImportError as exc:  # checked by parse_database_url already; kept for a driver's late import
        raise ConfigurationError(missing_driver(f"{PREFIX}DATABASE_URL", url, exc)) from exc
    bound_ms = max(1, round(settings.lock_timeout * 1000))
    other_guards = (
        ("statement_timeout", round(settings.statement_timeout * 1000)),
        ("idle_in_transaction_session_timeout", round(settings.idle_in_transaction_timeout * 1000)),
    )
    guards = "; ".join(f"SET {name} = {ms}" for name, ms in (("lock_timeout", bound_ms), *other_guards))
    local_guards = "".join(f"; SET LOCAL {name} = {ms}" for name, ms in other_guards)

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # The server ended the session (a guard's timeout, pg_terminate_backend, a shutdown): the
        # connection is gone, so retire it (closed now, never back into the pool).
        if getattr(context.original_exception, "sqlstate", None) in _SESSION_ENDED:
            context.is_disconnect = True

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        _set_up_postgres_connection(dbapi_connection, record, url, guards, bound_ms)

    @event.listens_for(engine, "before_cursor_execute")
    def _cap_lock_wait(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:8].upper().startswith(_ENDINGS):
            return
        wanted = _capped_wait_ms(settings.lock_timeout, f"{PREFIX}LOCK_TIMEOUT", url)
        info = conn.info
        dbapi_connection = cursor.connection
        if info.get(POOLED):
            if dbapi_connection.autocommit:  # nothing set now would last: the store avoids this
                return
            root = conn.get_transaction()
            if info.get(_GUARDED) is not root:  # the transaction's first statement
                dbapi_connection.execute(f"SET LOCAL lock_timeout = {wanted}{local_guards}")
                info[_GUARDED] = root
                info[_LOCAL_WAIT_MS] = (conn.get_nested_transaction() or root, wanted)
                return
        session_ms = int(info.get(_WAIT_MS, bound_ms))
        if dbapi_connection.autocommit:  # one statement, its own transaction: set it for the session
            if abs(session_ms - wanted) > _CAP_SLACK_MS:
                dbapi_connection.execute(f"SET lock_timeout = {wanted}")
                info[_WAIT_MS] = wanted
            return
        # In a transaction: SET LOCAL, undone with it (or with the savepoint it was made in).
        transaction = conn.get_nested_transaction() or conn.get_transaction()
        local = info.get(_LOCAL_WAIT_MS)
        in_force = local[1] if local is not None and local[0] is transaction else session_ms
        if abs(in_force - wanted) > _CAP_SLACK_MS:
            dbapi_connection.execute(f"SET LOCAL lock_timeout = {wanted}")
            info[_LOCAL_WAIT_MS] = (transaction, wanted)

    return engine


def _set_up_postgres_connection(
    dbapi_connection: Any, record: ConnectionPoolEntry, url: URL, guards: str, bound_ms: int
) -> None:
    """A new connection: the session guards set once, or, behind a pooler, nothing kept in it."""
    record.info.pop(_LOCAL_WAIT_MS, None)
    record.info.pop(_GUARDED, None)
    pooled = _behind_pooler(dbapi_connection)
    record.info[POOLED] = pooled
    if pooled:  # session state would stay on a server connection others get next
        dbapi_connection.prepare_threshold = None
        _report_pooler(url)
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(guards)  # one round trip for the three session guards
    finally:
        cursor.close()
    dbapi_connection.commit()  # psycopg opened a transaction for the SET: end it
    record.info[_WAIT_MS] = bound_ms


def is_pooled(connection: Connection) -> bool:
    """Whether ``connection`` reaches PostgreSQL through a transaction pooler (see the docstring)."""
    return bool(connection.info.get(POOLED))


def _behind_pooler(dbapi_connection: Any) -> bool:
    """PostgreSQL sends the answering backend's pid as the connection's key; a pooler sends its own."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    finally:
        cursor.close()
    dbapi_connection.commit()
    return bool(row is not None and row[0] != dbapi_connection.info.backend_pid)


_pooler_reported: set[str] = set()


def _report_pooler(url: URL) -> None:
    """Say once per process and database what changes behind a transaction pooler."""
    where = describe_url(url)
    if where in _pooler_reported:
        return
    _pooler_reported.add(where)
    log.emit(
        "postgres_pooler_detected",
        pid=os.getpid(),
        database=where,
        consequence="no prepared statements; lock, statement and idle timeouts set in every "
        "transaction; no statement in autocommit",
    )


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
    busy_timeout = settings.sqlite_busy_timeout_ms
    pooling: dict[str, Any] = (
        {}  # in memory: SQLAlchemy's one connection per thread
        if path is None
        else {"poolclass": _YieldingQueuePool, "pool_timeout": settings.pool_timeout}
    )
    engine = create_engine(
        url,
        connect_args={"timeout": busy_timeout / 1000},
        execution_options={LOCK_BOUND: busy_timeout / 1000},
        **pooling,
    )

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
        record.info[_WAIT_MS] = int(busy_timeout)

    if busy_timeout > 0:  # 0: a writer never waits, so no request queues behind one

        @event.listens_for(engine, "before_cursor_execute")
        def _cap_busy_wait(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip()[:8].upper().startswith(_ENDINGS):
                return
            wanted = _capped_wait_ms(busy_timeout / 1000, f"{PREFIX}SQLITE_BUSY_TIMEOUT_MS", url)
            if conn.info.get(_WAIT_MS) != wanted:  # in process: no round trip, so exactly
                cursor.connection.execute(f"PRAGMA busy_timeout={wanted}")
                conn.info[_WAIT_MS] = wanted

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
