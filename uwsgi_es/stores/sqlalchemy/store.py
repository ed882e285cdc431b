"""The SQLAlchemy record store: SQLite (the embedded default) and PostgreSQL.

Why it looks the way it does:

- Connections, transactions, the retry on a dropped connection, the SQLite file's identity and the
  driver's errors are the datastore's (``stores.sqlalchemy.datastore``); this module holds the
  statements. The engine is created by ``from_settings`` in the process that uses it (after the
  fork); the web layer calls ``end_request()`` after every request (also after errors) so a
  session never outlives its request and the pool is back to zero.
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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import IntegrityError

from uwsgi_es.errors import (
    CommandRejectedError,
    ConcurrencyError,
    DuplicateRequestError,
    OutcomeUnknownError,
    SchemaMissingError,
    StoreUnavailableError,
)
from uwsgi_es.runtime import process
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import (
    SNAPSHOTS_TABLE,
    RecordStore,
    Snapshot,
    StoredRecord,
    heartbeat_name,
    require_room_for_the_log,
    version_conflict,
)
from uwsgi_es.stores.sqlalchemy.datastore import SQLAlchemyDatastore, answered, dropped, retry_once
from uwsgi_es.stores.sqlalchemy.engine import (
    create_engine_from_settings,
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

if TYPE_CHECKING:  # the ORM is imported only when a view asks for a session (see `sessions`)
    from sqlalchemy.orm import Session, scoped_session

log = logging.getLogger(__name__)
# Where a transaction's next append places its events (see ``_claim_places``).
_PLACES = "uwsgi_es_positions_claimed"
# PostgreSQL: an append finds no position base (the function undefined, or the trigger that sets
# it missing): the database was not upgraded to announce its writers.
_NOT_ANNOUNCING = frozenset({"42883", UNANNOUNCED})
# Expired answers are swept at most this often per process, in a keyed request's transaction.
SWEEP_INTERVAL = 60.0


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
        self.datastore = SQLAlchemyDatastore(
            engine, sessions=sessions, owns_engine=owns_engine, url=url, writer_timeout=writer_timeout
        )
        self.engine = engine
        self.url = self.datastore.url
        self.secrets = self.datastore.secrets
        self.path = self.datastore.path
        self._is_sqlite = self.datastore.is_sqlite
        self._is_postgres = self.datastore.is_postgres
        self._swept = 0.0

    @property
    def sessions(self) -> scoped_session[Session]:
        """The request's ORM session (the datastore's), for views that do their own work in the
        store's database."""
        return self.datastore.sessions

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLAlchemyRecordStore:
        return cls(
            create_engine_from_settings(settings),
            url=settings.database_url,
            writer_timeout=settings.sqlite_busy_timeout_ms / 1000,
        )

    def describe(self) -> str:
        return self.datastore.describe()

    def create_schema(self) -> None:
        self.datastore.create_file()
        with self.datastore.errors():
            metadata.create_all(self.engine, checkfirst=True)
            _upgrade_snapshots(self.engine)
            if self._is_postgres:
                with self.engine.begin() as connection:
                    _upgrade_positions(connection)
                    _announce_writers(connection)

    @retry_once
    def append(self, records: Sequence[StoredRecord]) -> int | None:
        if not records:
            return None
        self.check_process()
        try:
            return self._append(records)
        except StoreUnavailableError as exc:
            # On PostgreSQL the INSERT commits itself: if its connection died with it, it may or
            # may not be stored. The rows say which; a new connection stores them if not.
            if not (self._is_postgres and dropped(exc) and not self.datastore.joined()):
                raise
            log.info("an append's connection was dropped; checking what was stored: %s", exc)
            refused = answered(exc)
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
            with self.datastore.errors(), self.datastore.transaction(write=True) as connection:
                if self._is_postgres and len(records) == 1:  # positions: see the module docstring
                    values = {**_row(records[0]), "first": _claim_places(connection, 1)}
                    return int(connection.execute(INSERT_ONE_PG, values).scalar_one())
                if self._is_postgres:
                    columns = {
                        "first": _claim_places(connection, len(records)),
                        "originator_ids": [r.originator_id for r in records],
                        "originator_versions": [r.originator_version for r in records],
                        "topics": [r.topic for r in records],
                        "states": [r.state for r in records],
                    }
                    return int(max(connection.execute(INSERT_PG, columns).scalars()))
                return int(connection.execute(INSERT, [_row(r) for r in records]).scalars().all()[-1])
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

    @retry_once
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
        with self.datastore.errors(), self.datastore.transaction(write=False) as connection:
            rows = connection.execute(statement, params).all()
        # The id is known: not reading it back spares a UUID conversion per row.
        return [
            StoredRecord(originator_id, version, topic, state, row_id)
            for version, topic, state, row_id in rows
        ]

    @retry_once
    def select_all(self, after_id: int, limit: int) -> list[StoredRecord]:
        self.check_process()
        with self.datastore.errors(), self.datastore.transaction(write=False) as connection:
            return select_all_on(connection, after_id, limit)

    @retry_once
    def last_position(self) -> int:
        """The feed position of the last record the feed shows (0 when there is none)."""
        self.check_process()
        statement = SELECT_LAST_ID_PG if self._is_postgres else SELECT_LAST_ID
        with self.datastore.errors(), self.datastore.transaction(write=False) as connection:
            return int(connection.execute(statement).scalar() or 0)

    @retry_once
    def count_after(self, position: int, cap: int) -> int:
        """How many events are stored after ``position``, counted up to ``cap``: a lag in events
        (positions are not contiguous on PostgreSQL, so they cannot be subtracted). On PostgreSQL
        it counts those the feed does not show yet too (committed after a transaction that appends
        and is still open): a lag measured below the horizon would say 0 while they pile up."""
        self.check_process()
        with self.datastore.errors(), self.datastore.transaction(write=False) as connection:
            return int(connection.execute(COUNT_AFTER, {"after_id": position, "cap": cap}).scalar_one())

    def wake_projections(self, connection: Connection) -> None:
        """Wake the projection runners now rather than at their next poll, and end ``connection``'s
        transaction (PostgreSQL NOTIFY, sent by a read waiting for its own write: appends send
        none: notifying transactions commit one at a time, and writers must not queue)."""
        self.check_process()
        with self.datastore.errors():
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
        with self.engine.connect() as connection, self.datastore.in_transaction(connection, write=True):
            yield connection

    @retry_once
    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.check_process()
        values = {**_row(StoredRecord(*snapshot[:4])), "last_event": snapshot.last_event}
        with self.datastore.errors(), self.datastore.transaction(write=True) as connection:
            connection.execute(UPSERT_SNAPSHOT, values)

    @retry_once
    def latest_snapshot(self, originator_id: UUID) -> Snapshot | None:
        self.check_process()
        with self.datastore.errors(), self.datastore.transaction(write=False) as connection:
            row = connection.execute(SELECT_SNAPSHOT, {"originator_id": originator_id}).first()
        if row is None:
            return None
        digest = None if row[3] is None else str(row[3])
        return Snapshot(originator_id, int(row[0]), str(row[1]), str(row[2]), digest)

    @retry_once
    def recall(self, key: str, since: float) -> tuple[str, str] | None:
        self.check_process()
        with self.datastore.errors(), self.datastore.transaction(write=False) as connection:
            row = connection.execute(SELECT_ANSWER, {"key": key, "since": since}).first()
        return None if row is None else (str(row[0]), str(row[1]))

    @contextmanager
    def remembering(self, key: str, digest: str, since: float) -> Iterator[Callable[[str], None]]:
        self.check_process()
        answers: list[str] = []
        with (
            self.datastore.errors(),
            self.engine.connect() as connection,
            process.holding_connection(),  # the request's work runs inside: it must not yield
            self.datastore.in_transaction(connection, write=True),
        ):
            with self.datastore.joining(connection):
                yield answers.append
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

    @retry_once
    def ping(self) -> None:
        self.check_process()
        self.datastore.ping()

    @retry_once
    def check_ready(self) -> None:
        """Ping, then take the table lock an append takes and rewrite this host's heartbeat row: only
        a committed write shows that the store accepts writes (a read-only file or database, a full
        disk, a standby all answer reads), and the lock shows that appends are not held up (by a
        session holding the events table in a mode that blocks inserts).

        SQLite also needs room on its disk: on a nearly full one small writes still fit in the WAL
        file's free frames while appends fail, so a heartbeat alone would flap."""
        self.ping()
        if self.path is not None:
            require_room_for_the_log(self.path.parent, self.describe())
        with self.datastore.errors(), self.datastore.transaction(write=True, alone=False) as connection:
            if self._is_postgres:
                connection.execute(LOCK_AS_APPENDS_DO)
            connection.execute(HEARTBEAT, {"host": heartbeat_name()})

    def end_request(self) -> None:
        self.datastore.end_request()

    def pool_status(self) -> dict[str, int]:
        return self.datastore.pool_status()

    def _forget(self) -> None:
        self.datastore.forget()

    def _release(self) -> None:
        self.datastore.release()


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


def _claim_places(connection: Session | Connection, count: int) -> int:
    """The first of ``count`` places for events in this transaction's positions (PostgreSQL).

    A transaction that appends more than once (a keyed request whose command is re-run, a view's
    session) continues where its last append stopped, so its positions stay unique and in order."""
    transaction = connection.get_transaction()
    if transaction is None:  # autocommit: the statement is its own transaction
        return 0
    claimed = connection.info.get(_PLACES)
    first = claimed[1] if claimed is not None and claimed[0] is transaction else 0
    if first + count > POSITIONS_PER_TRANSACTION:
        raise CommandRejectedError(
            f"One transaction may append at most {POSITIONS_PER_TRANSACTION} events on PostgreSQL "
            f"(this one asked for {first + count}): split the command's work into several commands."
        )
    connection.info[_PLACES] = (transaction, first + count)
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
