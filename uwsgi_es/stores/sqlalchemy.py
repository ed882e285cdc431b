"""The SQLAlchemy record store: SQLite (the embedded default) and PostgreSQL.

Why it looks the way it does:

- The engine is created by ``SQLAlchemyRecordStore.from_settings`` in the process that uses it
  (after the fork); nothing here connects at import time.
- The store's own statements run on a pooled Core connection held for one transaction only, or
  join the request's ``scoped_session`` when the view already opened a transaction in it. The web
  layer calls ``end_request()`` after every request (also after errors) so a session never
  outlives its request and the pool is back to zero.
- SQLite: WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for writes. A deferred transaction that
  upgrades to a write can fail with "database is locked" whatever the timeout; taking the write
  lock up front makes writers queue instead. It also makes insert order equal commit order.
- The unique index on (originator_id, originator_version) is the optimistic-concurrency lock: a
  batch with an existing version violates it, the transaction rolls back, nothing is stored.
- The global feed (``select_all``) must never skip an event. Ids are handed out at insert time but
  become visible at commit, so with concurrent writers a reader could see id 7 before id 6
  commits, move past 6 and never see it. We make insert order equal commit order instead of
  making readers gap-aware: PostgreSQL writers take ``LOCK TABLE ... IN EXCLUSIVE MODE`` for
  their (short) transaction, which queues writers but never blocks readers; SQLite's
  ``BEGIN IMMEDIATE`` already admits one writer at a time. Simple readers stay correct.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from uwsgi_es.errors import (
    ConfigurationError,
    SchemaMissingError,
    StoreUnavailableError,
)
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import RecordStore, StoredRecord, version_conflict

if TYPE_CHECKING:  # the ORM is imported only when a view asks for a session (see `sessions`)
    from sqlalchemy.orm import Session, scoped_session

log = logging.getLogger(__name__)

metadata = MetaData()

records_table = Table(
    "integer_sequenced_items",
    metadata,
    # SQLite only auto-increments an INTEGER PRIMARY KEY, so the big integer becomes INTEGER there.
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("originator_id", Uuid(), nullable=False),
    Column("originator_version", BigInteger(), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("state", Text(), nullable=False),
    Index("integer_sequenced_items_originator", "originator_id", "originator_version", unique=True),
)

# Built once: constructing statements per call costs more than running them on SQLite.
_SELECT_ONE = (
    select(
        records_table.c.originator_version, records_table.c.topic, records_table.c.state, records_table.c.id
    )
    .where(records_table.c.originator_id == bindparam("originator_id"))
    .order_by(records_table.c.originator_version)
)
_SELECT_AFTER = (
    select(
        records_table.c.originator_id,
        records_table.c.originator_version,
        records_table.c.topic,
        records_table.c.state,
        records_table.c.id,
    )
    .where(records_table.c.id > bindparam("after_id"))
    .order_by(records_table.c.id)
    .limit(bindparam("limit"))
)
_INSERT = insert(records_table)
_LOCK_FOR_APPEND = text(f"LOCK TABLE {records_table.name} IN EXCLUSIVE MODE")
_WRITE = "uwsgi_es_write"  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)


def create_engine_from_settings(settings: Settings) -> Engine:
    """An engine for this process. Call it after the fork, never in the uWSGI master."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(settings)
    try:
        return create_engine(
            url,
            connect_args={"connect_timeout": settings.connect_timeout},
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_recycle=settings.pool_recycle,
            pool_pre_ping=settings.pool_pre_ping,
        )
    except ImportError as exc:
        raise ConfigurationError(
            f"UWSGI_ES_DATABASE_URL uses the {url.drivername!r} driver, which is not installed ({exc}). "
            "For PostgreSQL install the extra: pip install 'uwsgi_es[postgres]'."
        ) from exc


def _create_sqlite_engine(settings: Settings) -> Engine:
    engine = create_engine(
        settings.database_url,
        connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000},
    )
    is_memory = settings.is_sqlite_memory
    busy_timeout = settings.sqlite_busy_timeout_ms

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the sqlite3 module, so "begin" below decides the BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not is_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(_WRITE):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


class _WriterQueue:
    """Queues SQLite writers of all processes on one host, in the kernel instead of in a sleep loop.

    SQLite's busy handler polls a held write lock with sleeps of 1, 2, 5, 10... ms, so two workers
    writing at once lose milliseconds per collision. Holding ``flock`` on a file beside the
    database for the (short) write transaction makes a waiting writer wake the moment the lock is
    released. A thread lock orders the threads of one process (flock is per open file, shared by
    threads). The busy timeout stays as the safety net for writers that do not take this lock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SQLAlchemyRecordStore(RecordStore):
    """Records in the ``integer_sequenced_items`` table of any SQLAlchemy engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        sessions: scoped_session[Session] | None = None,
        owns_engine: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        # Sessions given by someone else (Flask-SQLAlchemy's db.session) are theirs to remove.
        self._owns_sessions = sessions is None
        self._sessions = sessions
        self._sessions_lock = threading.Lock()
        self._owns_engine = owns_engine
        self._is_sqlite = engine.dialect.name == "sqlite"
        self._is_postgres = engine.dialect.name == "postgresql"
        database = engine.url.database
        file_database = self._is_sqlite and database not in (None, "", ":memory:")
        self._writers = _WriterQueue(f"{database}.writers") if file_database else None
        self._closed = False

    @property
    def sessions(self) -> scoped_session[Session]:
        """The request's ORM session, for views that do their own work in the store's database.

        Made on first use: the store's own statements run on Core connections, so a worker that
        never asks for a session never imports the ORM (about 6 MB per worker).
        """
        if self._sessions is None:
            with self._sessions_lock:
                if self._sessions is None:
                    from sqlalchemy.orm import scoped_session, sessionmaker

                    self._sessions = scoped_session(sessionmaker(bind=self.engine))
        return self._sessions

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLAlchemyRecordStore:
        return cls(create_engine_from_settings(settings))

    def describe(self) -> str:
        return f"SQLAlchemy store at {self.engine.url.render_as_string()}"

    def create_schema(self) -> None:
        database = self.engine.url.database
        if self._is_sqlite and database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        with self._errors():
            metadata.create_all(self.engine, checkfirst=True)

    def append(self, records: Sequence[StoredRecord]) -> None:
        if not records:
            return
        self.check_process()
        rows = [
            {
                "originator_id": r.originator_id,
                "originator_version": r.originator_version,
                "topic": r.topic,
                "state": r.state,
            }
            for r in records
        ]
        try:
            with self._errors(), self._transaction(write=True) as session:
                if self._is_postgres:  # insert order = commit order: see the module docstring
                    session.execute(_LOCK_FOR_APPEND)
                session.execute(_INSERT, rows)
        except IntegrityError as exc:
            raise version_conflict(records) from exc

    def select(self, originator_id: UUID) -> list[StoredRecord]:
        self.check_process()
        with self._errors(), self._transaction(write=False) as session:
            rows = session.execute(_SELECT_ONE, {"originator_id": originator_id}).all()
        # The id is known: not reading it back spares a UUID conversion per row.
        return [
            StoredRecord(originator_id, version, topic, state, row_id)
            for version, topic, state, row_id in rows
        ]

    def select_all(self, after_id: int, limit: int) -> list[StoredRecord]:
        self.check_process()
        params = {"after_id": after_id, "limit": limit}
        with self._errors(), self._transaction(write=False) as session:
            return [StoredRecord(*row) for row in session.execute(_SELECT_AFTER, params)]

    def ping(self) -> None:
        self.check_process()
        database = self.engine.url.database
        if self._is_sqlite and database and database != ":memory:" and not Path(database).exists():
            # Connecting would create an empty file (or fail on a missing folder): say what to do.
            raise SchemaMissingError(
                f"The SQLite database file {Path(database).resolve()} does not exist. "
                "Create it once per deployment with: uwsgi-es migrate"
            )
        # A plain connection, not the request's session: ping also runs outside any request
        # (right after the build), where a framework's session may not be usable.
        with self._errors(), self.engine.connect() as connection:
            connection.execute(select(records_table.c.id).limit(1)).all()

    def end_request(self) -> None:
        if self._owns_sessions and self._sessions is not None:
            self._sessions.remove()

    def pool_status(self) -> dict[str, int]:
        checked_out = getattr(self.engine.pool, "checkedout", None)
        return {"checked_out": int(checked_out())} if callable(checked_out) else {}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self.built_in_pid:
            # Inherited across fork: the sockets are the parent's. Forget them, never close them.
            self.engine.dispose(close=False)
            return
        if self._owns_sessions and self._sessions is not None:
            self._sessions.remove()
        if self._writers is not None:
            self._writers.close()
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session | Connection]:
        """Where the store's own statements run.

        If the request's session is already in a transaction (the view did its own work in it,
        e.g. a Flask-SQLAlchemy view), join it by a savepoint, so both commit or roll back
        together. Otherwise use a pooled Core connection for just this statement: half the cost of
        an ORM session on the hot path, and the connection is back in the pool when it returns.
        """
        if self._sessions is not None and self._sessions.registry.has():
            session = self._sessions()
            if session.in_transaction():
                with session.begin_nested():
                    yield session
                return
        with self.engine.connect() as connection:
            if write and self._writers is not None:
                connection.execution_options(**{_WRITE: True})  # SQLite: BEGIN IMMEDIATE
                with self._writers, connection.begin():
                    yield connection
                return
            with connection.begin():
                yield connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn driver errors into ours; integrity errors pass through for the caller to judge."""
        try:
            yield
        except IntegrityError:
            raise
        except DBAPIError as exc:
            if _is_missing_table(exc):
                raise SchemaMissingError(
                    f"The table {records_table.name} does not exist in {self.describe()}. "
                    "Create it once per deployment with: uwsgi-es migrate"
                ) from exc
            raise StoreUnavailableError(f"{self.describe()} is unavailable: {exc.orig}") from exc
        except SQLAlchemyError as exc:  # e.g. pool timeout: every connection busy
            raise StoreUnavailableError(f"{self.describe()} is unavailable: {exc}") from exc


def _is_missing_table(exc: DBAPIError) -> bool:
    if getattr(exc.orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    return "no such table" in str(exc.orig)
