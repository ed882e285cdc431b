"""The SQLAlchemy record store: SQLite (the embedded default) and PostgreSQL.

Why it looks the way it does:

- The engine is created by ``SQLAlchemyRecordStore.from_settings`` in the process that uses it
  (after the fork); nothing here connects at import time.
- The store's own statements run on a pooled Core connection held for one transaction only, or
  join the request's ``scoped_session`` when the view already opened a transaction in it. The web
  layer calls ``end_request()`` after every request (also after errors) so a session never
  outlives its request and the pool is back to zero.
- The unique index on (originator_id, originator_version) is the optimistic-concurrency lock: a
  batch with an existing version violates it, the transaction rolls back, nothing is stored.
- The global feed (``select_all``) must never skip an event. Positions are handed out at insert
  time but become visible at commit, so with concurrent writers a reader could see position 7
  before 6 commits, move past 6 and never see it. SQLite's ``BEGIN IMMEDIATE`` admits one writer
  at a time, so its commit order is its insert order. PostgreSQL writers commit concurrently (no
  table lock: their fsyncs group); a position there starts with a transaction id the writing
  transaction was given after it announced that it appends events (the events table's trigger
  does both), and the feed reads only below the oldest transaction that may still commit events
  (``postgres_feed``), a prefix of the order that can no longer change. Readers wait for appending
  transactions in flight (no other transaction, in any database), never writers for each other.
- Round trips: on PostgreSQL every operation that is one statement (a read, an append) runs in
  autocommit, without BEGIN and COMMIT. Nothing pings a pooled connection before use: a call whose
  connection the server dropped (a restart) runs once more on a new one, unless it may have been
  stored; an append in that state (its INSERT commits itself) looks at what is stored: its own
  records as sent mean the answer was lost, none mean it stores them now.
- A request sent with an ``Idempotency-Key`` runs in one write transaction (``remembering``): its
  appends join it through a savepoint (a version conflict rolls back the append only, and the
  command is re-run), and its answer is inserted under the key before the one commit. Events and
  answer are stored together or not at all; a second request that stored the same key first makes
  this one roll back whole (``DuplicateRequestError``).
- SQLite: a write is acknowledged only if, after its commit, the database path still names the
  file the connection wrote to. A file deleted or replaced under a running server would otherwise
  take acknowledged writes with it; instead they answer 503 until the file is back.
"""

from __future__ import annotations

import functools
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import unquote
from uuid import UUID

from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from uwsgi_es.errors import (
    CommandRejectedError,
    ConcurrencyError,
    DeadlinePassedError,
    DuplicateRequestError,
    OutcomeUnknownError,
    PoolExhaustedError,
    SchemaMissingError,
    StoreBusyError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from uwsgi_es.redaction import redact_url, secrets_of
from uwsgi_es.runtime import process
from uwsgi_es.settings import Settings
from uwsgi_es.stores import deadlines
from uwsgi_es.stores.base import (
    SNAPSHOTS_TABLE,
    RecordStore,
    Snapshot,
    StoredRecord,
    heartbeat_name,
    version_conflict,
)
from uwsgi_es.stores.sqlalchemy.engine import (
    FILE_IDENTITY,
    WRITE,
    create_engine_from_settings,
    file_identity,
    is_pooled,
    lock_bound,
    pool_exhausted,
    sqlite_path,
    translate,
)
from uwsgi_es.stores.sqlalchemy.postgres_feed import UNANNOUNCED
from uwsgi_es.stores.sqlalchemy.schema import (
    ADD_SNAPSHOT_DIGEST,
    ANNOUNCING_PG,
    COUNT_AFTER,
    DELETE_EXPIRED,
    DELETE_EXPIRED_KEY,
    HEARTBEAT,
    INSERT,
    INSERT_ANSWER,
    INSERT_ONE_PG,
    INSERT_PG,
    LOCK_AS_APPENDS_DO,
    NOTIFY,
    POSITIONS_BEFORE_UPGRADE_PG,
    POSITIONS_PER_TRANSACTION,
    PRESENT_TRIGGERS_PG,
    SELECT_AFTER,
    SELECT_AFTER_PG,
    SELECT_ANSWER,
    SELECT_ANY,
    SELECT_LAST_ID,
    SELECT_LAST_ID_PG,
    SELECT_ONE,
    SELECT_ONE_AFTER,
    SELECT_SNAPSHOT,
    TRIGGERS_PG,
    UPGRADE_PG,
    UPSERT_SNAPSHOT,
    metadata,
)
from uwsgi_es.stores.sqlalchemy.writers import WriterQueue

if TYPE_CHECKING:  # the ORM is imported only when a view asks for a session (see `sessions`)
    from sqlalchemy.orm import Session, scoped_session

log = logging.getLogger(__name__)
# SQLite checkpoints its write-ahead log at 1000 pages (4 MiB): below that much free space, appends
# start failing with "database or disk is full".
MIN_FREE_BYTES = 4 * 1024 * 1024
# Set when an operation's own transaction reached COMMIT: a failure from there on is not retried.
_committing: ContextVar[bool] = ContextVar("uwsgi_es_committing", default=False)
Operation = TypeVar("Operation", bound=Callable[..., Any])
# Where a transaction's next append places its events (see ``_claim_places``).
_PLACES = "uwsgi_es_positions_claimed"
# PostgreSQL: an append finds no position base (the function undefined, or the trigger that sets
# it missing): the database was not upgraded to announce its writers.
_NOT_ANNOUNCING = frozenset({"42883", UNANNOUNCED})
# Expired answers are swept at most this often per process, in a keyed request's transaction.
SWEEP_INTERVAL = 60.0
# The write transaction of the keyed request this context (thread, greenlet) is serving, and the
# store it belongs to: that store's statements join it (see ``remembering``).
_unit: ContextVar[tuple[SQLAlchemyRecordStore, Connection] | None] = ContextVar(
    "uwsgi_es_unit_of_work", default=None
)


def _once_more_if_the_server_went_away(operation: Operation) -> Operation:
    """Run a store operation again, once, when its pooled connection turned out to be dead (the
    server restarted, or ended the session) before anything was committed.

    This replaces a ping before every checkout (one round trip per request) with nothing on the
    hot path: a connection the server dropped fails its first statement, SQLAlchemy retires it and
    every connection pooled before it, and the second attempt runs on a new one. Never retried: a
    failure at COMMIT (it may have been stored), and work in a transaction someone else began (a
    keyed request's, a view's session), which must fail whole.

    Within a request under uWSGI's gevent loop, an operation of its own also waits for a lock in
    slices (``uwsgi_es.stores.deadlines``): after a slice timed out it runs again, after a yield
    that holds no connection, until the request's deadline. The worker's other requests run
    meanwhile, instead of queueing behind the whole wait."""

    @functools.wraps(operation)
    def attempt(store: SQLAlchemyRecordStore, *args: Any, **kwargs: Any) -> Any:
        bound = lock_bound(store.engine)
        if bound is None or not deadlines.slices_waits() or store._joined() or process.holds_connection():
            return once_more(store, *args, **kwargs)
        while True:  # its waits in slices, taking turns with the process's other requests
            with deadlines.turn(bound) as timed_out:
                try:
                    with deadlines.sliceable():
                        return once_more(store, *args, **kwargs)
                except StoreBusyError as exc:
                    timed_out[0] = _sliced_wait_timed_out(exc)
                    if not timed_out[0] or deadlines.left(bound) <= deadlines.SLICE_SECONDS:
                        raise
            process.pause(random.uniform(0.5, 1.0) * deadlines.SLICE_SECONDS)  # no connection held

    def once_more(store: SQLAlchemyRecordStore, *args: Any, **kwargs: Any) -> Any:
        _committing.set(False)
        try:
            return operation(store, *args, **kwargs)
        except StoreUnavailableError as exc:
            if not _dropped(exc) or _committing.get() or store._joined():
                raise
            log.info("retrying once on a new connection: %s", exc)
            return operation(store, *args, **kwargs)

    return cast(Operation, attempt)


def _sliced_wait_timed_out(error: StoreBusyError) -> bool:
    """Whether ``error`` ends a wait for a lock that wrote nothing, so the operation may run again:
    not the refusal past the deadline, not the pool's own bounded wait, not a wait that may have
    written (SQLite's COMMIT)."""
    if isinstance(error, DeadlinePassedError | PoolExhaustedError):
        return False
    return not _committing.get() or _lock_not_available(error)


def _lock_not_available(error: StoreBusyError) -> bool:
    """PostgreSQL's lock_timeout: the statement never ran, so nothing was written."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and getattr(cause.orig, "sqlstate", None) == "55P03"


def _answered(error: StoreUnavailableError) -> bool:
    """Whether the server answered the failed statement with an error (a SQLSTATE: it was not
    committed), rather than the connection breaking with no answer."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and getattr(cause.orig, "sqlstate", None) is not None


def _dropped(error: StoreUnavailableError) -> bool:
    """Whether the error is the server dropping the connection (SQLAlchemy then retires it)."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and cause.connection_invalidated


class SQLAlchemyRecordStore(RecordStore):
    """Records in the ``integer_sequenced_items`` table of any SQLAlchemy engine. A ``GlobalFeed``
    (``select_all``) and a ``RequestScope`` (``end_request`` removes the request's session)."""

    def __init__(
        self,
        engine: Engine,
        *,
        sessions: scoped_session[Session] | None = None,
        owns_engine: bool = True,
        url: str | None = None,
        writer_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.url = url or engine.url.render_as_string(hide_password=False)
        self.secrets = secrets_of(self.url)
        # Sessions given by someone else (Flask-SQLAlchemy's db.session) are theirs to remove.
        self._owns_sessions = sessions is None
        self._sessions = sessions
        self._sessions_lock = threading.Lock()
        self._owns_engine = owns_engine
        self._is_sqlite = engine.dialect.name == "sqlite"
        self._is_postgres = engine.dialect.name == "postgresql"
        self.path = _database_file(engine) if self._is_sqlite else None
        self._writers = WriterQueue(f"{self.path}.writers", writer_timeout) if self.path else None
        self._swept = 0.0

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
        return cls(
            create_engine_from_settings(settings),
            url=settings.database_url,
            writer_timeout=settings.sqlite_busy_timeout_ms / 1000,
        )

    def describe(self) -> str:
        return f"SQLAlchemy store at {redact_url(self.url)}"

    def create_schema(self) -> None:
        if self.path is not None:
            # Workers open the file with mode=rw and never create it; migrate does (an empty file
            # is an empty SQLite database).
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(exist_ok=True)
        with self._errors():
            metadata.create_all(self.engine, checkfirst=True)
            _upgrade_snapshots(self.engine)
            if self._is_postgres:
                with self.engine.begin() as connection:
                    _upgrade_positions(connection)
                    _announce_writers(connection)

    @_once_more_if_the_server_went_away
    def append(self, records: Sequence[StoredRecord]) -> int | None:
        if not records:
            return None
        self.check_process()
        try:
            return self._append(records)
        except StoreUnavailableError as exc:
            # On PostgreSQL the INSERT commits itself: if its connection died with it, it may or
            # may not be stored. The rows say which; a new connection stores them if not.
            if not (self._is_postgres and _dropped(exc) and not self._joined()):
                raise
            log.info("an append's connection was dropped; checking what was stored: %s", exc)
            refused = _answered(exc)
        try:
            return self._append_unless_stored(records)
        except StoreUnavailableError as unanswered:
            if refused:  # the server refused the statement: nothing of it was committed
                raise
            # The connection broke with no answer (a server killed, a failover): the INSERT may
            # have committed, and no server can say now. Only 504 says "may have been stored".
            raise OutcomeUnknownError(
                f"{self.describe()}: the connection broke before an append was answered, and the "
                f"store could not be asked whether it was stored ({unanswered}); read it back, or "
                "send it again with its Idempotency-Key, once the database answers."
            ) from unanswered

    def _append_unless_stored(self, records: Sequence[StoredRecord]) -> int:
        """After an append whose connection dropped: its records if they are stored as sent (the
        answer was lost), else store them now; a conflict if another writer's are there."""
        stored = self._stored_copy(records)
        if not stored:
            try:
                return self._append(records)
            except ConcurrencyError:
                stored = self._stored_copy(records)  # the first attempt was still running: ours?
        mine = {(r.originator_id, r.originator_version): (r.topic, r.state) for r in records}
        found = {(r.originator_id, r.originator_version): (r.topic, r.state) for r in stored}
        if found != mine:
            raise version_conflict(records)
        return max(r.id or 0 for r in stored)

    def _stored_copy(self, records: Sequence[StoredRecord]) -> list[StoredRecord]:
        """The stored records at the originators and versions of ``records``."""
        found: list[StoredRecord] = []
        for originator in dict.fromkeys(r.originator_id for r in records):
            versions = [r.originator_version for r in records if r.originator_id == originator]
            after, limit = min(versions) - 1, max(versions) - min(versions) + 1
            found += self.select(originator, after_version=after, limit=limit)
        return found

    def _append(self, records: Sequence[StoredRecord]) -> int:
        try:
            with self._errors(), self._transaction(write=True) as session:
                if self._is_postgres and len(records) == 1:  # positions: see the module docstring
                    values = {**_row(records[0]), "first": _claim_places(session, 1)}
                    return int(session.execute(INSERT_ONE_PG, values).scalar_one())
                if self._is_postgres:
                    columns = {
                        "first": _claim_places(session, len(records)),
                        "originator_ids": [r.originator_id for r in records],
                        "originator_versions": [r.originator_version for r in records],
                        "topics": [r.topic for r in records],
                        "states": [r.state for r in records],
                    }
                    return int(max(session.execute(INSERT_PG, columns).scalars()))
                return int(session.execute(INSERT, [_row(r) for r in records]).scalars().all()[-1])
        except IntegrityError as exc:
            raise version_conflict(records) from exc
        except StoreUnavailableError as exc:
            if getattr(getattr(exc.__cause__, "orig", None), "sqlstate", None) in _NOT_ANNOUNCING:
                raise SchemaMissingError(
                    f"The events table of {self.describe()} does not announce its writers yet (its "
                    "trigger and uwsgi_es_position_base() are missing), so this version cannot append "
                    "to it. Upgrade it once with: uwsgi-es migrate"
                ) from exc
            raise

    @_once_more_if_the_server_went_away
    def select(
        self, originator_id: UUID, *, after_version: int = 0, limit: int | None = None
    ) -> list[StoredRecord]:
        self.check_process()
        if after_version or limit is not None:
            statement = SELECT_ONE_AFTER
            params: dict[str, Any] = {
                "originator_id": originator_id,
                "after_version": after_version,
                "limit": -1 if limit is None and self._is_sqlite else limit,
            }
        else:
            statement, params = SELECT_ONE, {"originator_id": originator_id}
        with self._errors(), self._transaction(write=False) as session:
            rows = session.execute(statement, params).all()
        # The id is known: not reading it back spares a UUID conversion per row.
        return [
            StoredRecord(originator_id, version, topic, state, row_id)
            for version, topic, state, row_id in rows
        ]

    @_once_more_if_the_server_went_away
    def select_all(self, after_id: int, limit: int) -> list[StoredRecord]:
        self.check_process()
        with self._errors(), self._transaction(write=False) as session:
            return select_all_on(session, after_id, limit)

    @_once_more_if_the_server_went_away
    def last_position(self) -> int:
        """The feed position of the last record the feed shows (0 when there is none)."""
        self.check_process()
        statement = SELECT_LAST_ID_PG if self._is_postgres else SELECT_LAST_ID
        with self._errors(), self._transaction(write=False) as session:
            return int(session.execute(statement).scalar() or 0)

    @_once_more_if_the_server_went_away
    def count_after(self, position: int, cap: int) -> int:
        """How many events are stored after ``position``, counted up to ``cap``: a lag in events
        (positions are not contiguous on PostgreSQL, so they cannot be subtracted). On PostgreSQL
        it counts those the feed does not show yet too (committed after a transaction that appends
        and is still open): a lag measured below the horizon would say 0 while they pile up."""
        self.check_process()
        with self._errors(), self._transaction(write=False) as session:
            return int(session.execute(COUNT_AFTER, {"after_id": position, "cap": cap}).scalar_one())

    def wake_projections(self, connection: Connection) -> None:
        """Wake the projection runners now rather than at their next poll, and end ``connection``'s
        transaction (PostgreSQL NOTIFY, sent by a read waiting for its own write: appends send
        none: notifying transactions commit one at a time, and writers must not queue)."""
        self.check_process()
        with self._errors():
            if self._is_postgres:
                connection.execute(NOTIFY)
                connection.commit()
            else:
                connection.rollback()

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """A write transaction of its own (never a request's session), as appends take it: SQLite
        in the writers' queue with ``BEGIN IMMEDIATE``, the file checked before and after the
        commit. The read side applies a batch of events and its tracking record in one."""
        self.check_process()
        with self.engine.connect() as connection, self._in_transaction(connection, write=True):
            yield connection

    @_once_more_if_the_server_went_away
    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.check_process()
        values = {**_row(StoredRecord(*snapshot[:4])), "last_event": snapshot.last_event}
        with self._errors(), self._transaction(write=True) as session:
            session.execute(UPSERT_SNAPSHOT, values)

    @_once_more_if_the_server_went_away
    def latest_snapshot(self, originator_id: UUID) -> Snapshot | None:
        self.check_process()
        with self._errors(), self._transaction(write=False) as session:
            row = session.execute(SELECT_SNAPSHOT, {"originator_id": originator_id}).first()
        if row is None:
            return None
        digest = None if row[3] is None else str(row[3])
        return Snapshot(originator_id, int(row[0]), str(row[1]), str(row[2]), digest)

    @_once_more_if_the_server_went_away
    def recall(self, key: str, since: float) -> tuple[str, str] | None:
        self.check_process()
        with self._errors(), self._transaction(write=False) as session:
            row = session.execute(SELECT_ANSWER, {"key": key, "since": since}).first()
        return None if row is None else (str(row[0]), str(row[1]))

    @contextmanager
    def remembering(self, key: str, digest: str, since: float) -> Iterator[Callable[[str], None]]:
        self.check_process()
        answers: list[str] = []
        with (
            self._errors(),
            self.engine.connect() as connection,
            process.holding_connection(),  # the request's work runs inside: it must not yield
            self._in_transaction(connection, write=True),
        ):
            token = _unit.set((self, connection))
            try:
                yield answers.append
            finally:
                _unit.reset(token)
            if answers:
                now = time.time()
                connection.execute(DELETE_EXPIRED_KEY, {"key": key, "since": since})
                if now - self._swept > SWEEP_INTERVAL:
                    self._swept = now
                    connection.execute(DELETE_EXPIRED, {"since": since})
                try:
                    with connection.begin_nested():
                        connection.execute(
                            INSERT_ANSWER,
                            {"key": key, "digest": digest, "answer": answers[-1], "created": now},
                        )
                except IntegrityError as exc:
                    raise DuplicateRequestError(
                        f"Another request with Idempotency-Key {key[:60]!r} was stored first; this "
                        "one stored nothing."
                    ) from exc

    @_once_more_if_the_server_went_away
    def ping(self) -> None:
        self.check_process()
        if self.path is not None and not self.path.exists():
            # Connecting would fail with SQLite's "unable to open database file": say what to do.
            raise SchemaMissingError(
                f"The SQLite database file {self.path.resolve()} does not exist. "
                "Create it once per deployment with: uwsgi-es migrate"
            )
        # A plain connection, not the request's session: ping also runs outside any request
        # (right after the build), where a framework's session may not be usable.
        with self._errors(), self.engine.connect() as connection:
            connection.execute(SELECT_ANY).all()
            self._check_same_file(connection)

    @_once_more_if_the_server_went_away
    def check_ready(self) -> None:
        """Ping, then take the table lock an append takes and rewrite this host's heartbeat row: only
        a committed write shows that the store accepts writes (a read-only file or database, a full
        disk, a standby all answer reads), and the lock shows that appends are not held up (by a
        session holding the events table in a mode that blocks inserts).

        SQLite also needs room on its disk: on a nearly full one small writes still fit in the WAL
        file's free frames while appends fail, so a heartbeat alone would flap."""
        self.ping()
        if self.path is not None:
            free = shutil.disk_usage(self.path.parent).free
            if free < MIN_FREE_BYTES:
                raise StoreReadOnlyError(
                    f"{self.describe()} cannot take writes: its disk has {free} bytes free, under the "
                    f"{MIN_FREE_BYTES} a write-ahead log needs before a checkpoint. Free some space."
                )
        with self._errors(), self._transaction(write=True, alone=False) as session:
            if self._is_postgres:
                session.execute(LOCK_AS_APPENDS_DO)
            session.execute(HEARTBEAT, {"host": heartbeat_name()})

    def end_request(self) -> None:
        if self._owns_sessions and self._sessions is not None:
            self._sessions.remove()

    def pool_status(self) -> dict[str, int]:
        checked_out = getattr(self.engine.pool, "checkedout", None)
        return {"checked_out": int(checked_out())} if callable(checked_out) else {}

    def _forget(self) -> None:
        self.engine.dispose(close=False)  # the pooled sockets are the parent's: never close them

    def _release(self) -> None:
        if self._owns_sessions and self._sessions is not None:
            self._sessions.remove()
        if self._writers is not None:
            self._writers.close()
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def _transaction(self, *, write: bool, alone: bool = True) -> Iterator[Session | Connection]:
        """Where the store's own statements run.

        If the request's session is already in a transaction (the view did its own work in it,
        e.g. a Flask-SQLAlchemy view), join it by a savepoint, so both commit or roll back
        together. Otherwise use a pooled Core connection for just this statement: half the cost of
        an ORM session on the hot path, and the connection is back in the pool when it returns.
        On PostgreSQL a statement run ``alone`` (every operation but readiness) runs in autocommit:
        one statement is its own transaction, so BEGIN and COMMIT would only add round trips.
        Behind a transaction pooler it runs in a transaction all the same, which sets its guards.
        """
        unit = _unit.get()
        if unit is not None and unit[0] is self:
            connection = unit[1]
            if write:
                with connection.begin_nested():
                    yield connection
            else:
                yield connection
            return
        if self._sessions is not None and self._sessions.registry.has():
            session = self._sessions()
            if session.in_transaction():
                with session.begin_nested():
                    yield session
                return
        with self.engine.connect() as connection:
            if alone and self._is_postgres and not is_pooled(connection):
                connection.execution_options(isolation_level="AUTOCOMMIT")
                if write:
                    _committing.set(True)  # the statement commits itself: a failure may come after
                yield connection
                return
            with self._in_transaction(connection, write=write):
                yield connection

    @contextmanager
    def _in_transaction(self, connection: Connection, *, write: bool) -> Iterator[None]:
        if write and self._writers is not None:
            connection.execution_options(**{WRITE: True})  # SQLite: BEGIN IMMEDIATE
            with self._writers:
                with connection.begin():
                    self._check_same_file(connection)
                    yield
                    _committing.set(True)
                # Committed: acknowledge only if the path still names the file written to.
                self._check_same_file(connection)
            return
        with connection.begin():
            yield
            _committing.set(True)
        self._check_same_file(connection)

    def _joined(self) -> bool:
        """Whether this context's statements run in a transaction someone else began."""
        unit = _unit.get()
        if unit is not None and unit[0] is self:
            return True
        return (
            self._sessions is not None and self._sessions.registry.has() and self._sessions().in_transaction()
        )

    def _check_same_file(self, connection: Connection) -> None:
        """Refuse (503) when the SQLite file this connection uses was deleted or replaced."""
        if self.path is None:
            return
        opened = connection.info.get(FILE_IDENTITY)
        if opened is None or opened == file_identity(self.path):
            return
        connection.invalidate()
        self.engine.dispose()  # every pooled connection holds the old file: reopen on next use
        raise StoreUnavailableError(
            f"The SQLite database file {self.path.resolve()} was deleted or replaced while this "
            "worker used it: writes would go to a file nobody reads again, so none is acknowledged. "
            "Restore the file, or create a new one with: uwsgi-es migrate"
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn driver errors into ours; integrity errors pass through for the caller to judge."""
        try:
            yield
        except IntegrityError:
            raise
        except DBAPIError as exc:
            error = translate(exc, self.describe(), self.scrub)
            if self._is_sqlite and isinstance(error, StoreReadOnlyError) and self._owns_engine:
                # Every connection SQLite opened while the file was read-only stays read-only (and
                # keeps the WAL index mapped read-only for the others): close them all, so the next
                # attempt reopens the file and writes again once it is writable.
                self.engine.dispose()
            raise error from exc
        except PoolTimeoutError as exc:  # every pooled connection stayed in use
            raise pool_exhausted(self.engine, self.describe()) from exc
        except SQLAlchemyError as exc:
            raise self.unavailable(exc) from exc


def select_all_on(connection: Session | Connection, after_id: int, limit: int) -> list[StoredRecord]:
    """Records of every originator after ``after_id``, in feed order, on an open connection."""
    bind = connection if isinstance(connection, Connection) else connection.get_bind()
    postgres = bind.dialect.name == "postgresql"
    statement = SELECT_AFTER_PG if postgres else SELECT_AFTER
    rows = connection.execute(statement, {"after_id": after_id, "limit": limit})
    return [StoredRecord(*row) for row in rows]


def _row(record: StoredRecord) -> dict[str, Any]:
    """A record as the values of one row (without its position)."""
    return {
        "originator_id": record.originator_id,
        "originator_version": record.originator_version,
        "topic": record.topic,
        "state": record.state,
    }


def _claim_places(session: Session | Connection, count: int) -> int:
    """The first of ``count`` places for events in this transaction's positions (PostgreSQL).

    A transaction that appends more than once (a keyed request whose command is re-run, a view's
    session) continues where its last append stopped, so its positions stay unique and in order."""
    transaction = session.get_transaction()
    if transaction is None:  # autocommit: the statement is its own transaction
        return 0
    claimed = session.info.get(_PLACES)
    first = claimed[1] if claimed is not None and claimed[0] is transaction else 0
    if first + count > POSITIONS_PER_TRANSACTION:
        raise CommandRejectedError(
            f"One transaction may append at most {POSITIONS_PER_TRANSACTION} events on PostgreSQL "
            f"(this one asked for {first + count}): split the command's work into several commands."
        )
    session.info[_PLACES] = (transaction, first + count)
    return first


def _upgrade_snapshots(engine: Engine) -> None:
    """Give a snapshots table from before snapshots remembered their event the column (idempotent)."""
    columns = {column["name"] for column in inspect(engine).get_columns(SNAPSHOTS_TABLE)}
    if "last_event" not in columns:
        with engine.begin() as connection:
            connection.execute(ADD_SNAPSHOT_DIGEST)


def _upgrade_positions(connection: Connection) -> None:
    """Make an events table from before transaction-id positions take them (idempotent)."""
    connection.execute(UPGRADE_PG)
    highest, first_new = connection.execute(POSITIONS_BEFORE_UPGRADE_PG).one()
    if int(highest) >= int(first_new):
        raise StoreUnavailableError(
            f"The events table's highest position ({highest}) is not below the first position this "
            f"server's transactions will write ({first_new}); readers could skip new events. Copy "
            "the events into a new table in feed order before upgrading."
        )


def _announce_writers(connection: Connection) -> None:
    """Make every INSERT into the events table announce its transaction (``postgres_feed``):
    replace the functions, create the triggers missing (idempotent; CREATE TRIGGER waits for the
    writers in flight, so none of them writes unannounced after it)."""
    for statement in ANNOUNCING_PG:
        connection.execute(statement)
    present = set(connection.execute(PRESENT_TRIGGERS_PG).scalars())
    for name, statement in TRIGGERS_PG.items():
        if name not in present:
            connection.execute(statement)


def _database_file(engine: Engine) -> Path | None:
    path = sqlite_path(engine.url)
    if path is None:
        return None
    text = str(path)
    return Path(unquote(text.removeprefix("file:"))) if text.startswith("file:") else path
