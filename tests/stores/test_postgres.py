"""The record-store contract on a real PostgreSQL server (started by the tests), plus its own rules."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from uuid import uuid4

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from uwsgi_es.errors import (
    ConcurrencyError,
    SchemaMissingError,
    StoreBusyError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.stores.sqlalchemy.engine import is_pooled
from uwsgi_es.stores.sqlalchemy.schema import POSITIONS_PER_TRANSACTION, SELECT_AFTER
from uwsgi_es.stores.sqlalchemy.store import select_all_on
from uwsgi_es.testing import PostgresServer
from uwsgi_es.testing.pgbouncer import PgBouncer
from uwsgi_es.testing.postgres import ExistingPostgres

from .contract import records
from .snapshot_contract import SnapshotsContract
from .sqlalchemy_contract import SQLAlchemyStoreContract
from .typed_contract import TypedEventsContract

pytestmark = pytest.mark.postgres


class TestPostgresStore(SQLAlchemyStoreContract, TypedEventsContract, SnapshotsContract):
    @pytest.fixture
    def database_url(self, postgres_url: str) -> str:
        return postgres_url


@pytest.fixture(params=["direct", "through PgBouncer"])
def reached_url(request: pytest.FixtureRequest) -> str:
    """A new, migrated database, reached directly and through PgBouncer in transaction pooling
    (``deploy/pgbouncer.ini``): the rules below hold both ways."""
    return str(request.getfixturevalue("postgres_url" if request.param == "direct" else "pgbouncer_url"))


def test_pool_settings_reach_the_engine(postgres_url: str) -> None:
    settings = Settings(
        database_url=postgres_url, pool_size=3, max_overflow=2, pool_timeout=1.5, pool_pre_ping=True
    )
    store = SQLAlchemyRecordStore.from_settings(settings)
    pool = store.engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 2, 1.5)  # type: ignore[attr-defined]
    assert pool._pre_ping is True
    store.close()
    default = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres_url))
    assert default.engine.pool._pre_ping is False  # type: ignore[attr-defined]
    default.close()


def test_a_restarted_server_costs_no_failed_call_without_pre_ping() -> None:
    """Every pooled connection dies with the server. Without a ping before each checkout, the
    first call on a dead connection is run again, once, on a new one: reads, appends and readiness
    all succeed right after the restart. Work in a transaction someone else began is not retried
    (it must fail whole: its earlier statements are gone with the connection)."""
    with PostgresServer() as server:
        url = server.create_database("restarted")
        store = SQLAlchemyRecordStore.from_settings(Settings(database_url=url, pool_size=3))
        store.create_schema()
        originator = uuid4()
        store.append(records(originator, range(1, 2)))
        for _ in range(3):  # a pooled connection for each call below
            assert len(store.select(originator)) == 1
        server.stop_server()
        server.start_server()
        store.append(records(originator, range(2, 3)))
        assert [r.originator_version for r in store.select(originator)] == [1, 2]
        store.check_ready()
        server.stop_server()
        server.start_server()
        with pytest.raises(StoreUnavailableError), store.remembering(f"k-{originator}", "d", 0.0):
            store.append(records(originator, range(3, 4)))
        assert [r.originator_version for r in store.select(originator)] == [1, 2]
        store.close()


def test_unmigrated_database_says_to_migrate(postgres: PostgresServer | ExistingPostgres) -> None:
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres.create_database("unmigrated")))
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.ping()
    store.close()


def test_unreachable_server_is_unavailable_within_the_connect_timeout(
    postgres: PostgresServer | ExistingPostgres,
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port + 1}/nowhere"
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=url, connect_timeout=2))
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1"):
        store.ping()
    store.close()


def test_writers_commit_concurrently_and_the_feed_shows_only_what_can_no_longer_change(
    reached_url: str,
) -> None:
    """An older transaction has appended and not committed; a newer one appends and commits
    without waiting for it. The feed hides the newer event until the older transaction ends (a
    reader would otherwise move past the older event's position and never see it: the unprotected
    query shows that hole), while the lag counts it (stored, not yet shown); then the feed shows
    both, the older first."""
    settings = Settings(database_url=reached_url)
    slow, fast, reader = (SQLAlchemyRecordStore.from_settings(settings) for _ in range(3))
    start = reader.last_position()
    older, newer = uuid4(), uuid4()
    with slow.remembering(f"feed-{older}", "digest", 0.0):  # a write transaction held open
        slow.append(records(older, range(1, 3)))
        done = threading.Event()
        writer = threading.Thread(target=lambda: (fast.append(records(newer, range(1, 2))), done.set()))
        writer.start()
        assert done.wait(10), "a writer waited for another writer's transaction"
        assert [r.originator_id for r in reader.select_all(start, 10)] == []
        with reader.engine.connect() as connection:  # what a reader without the horizon would see
            unprotected = connection.execute(SELECT_AFTER, {"after_id": start, "limit": 10}).all()
        assert [row.originator_id for row in unprotected] == [newer]
        assert reader.count_after(start, 10) == 1
    feed = reader.select_all(start, 10)
    assert [(r.originator_id, r.originator_version) for r in feed] == [(older, 1), (older, 2), (newer, 1)]
    positions = [r.id or 0 for r in feed]
    assert positions == sorted(positions)
    assert len(set(positions)) == 3
    assert positions[1] - positions[0] == 1, "one transaction's events take consecutive places"
    assert positions[2] // POSITIONS_PER_TRANSACTION > positions[0] // POSITIONS_PER_TRANSACTION
    assert reader.last_position() == positions[-1]
    assert reader.count_after(start, 10) == 3
    with reader.engine.connect() as connection:
        assert select_all_on(connection, positions[0], 10) == feed[1:]
    for store in (slow, fast, reader):
        store.close()


def test_an_append_whose_answer_was_lost_is_stored_once(reached_url: str) -> None:
    """An append runs in autocommit; when its connection drops, it may have been stored or not.
    What the store does then (``_append_unless_stored``): stored as sent, it answers the stored
    position; not stored, it stores; another writer's events there, it is a conflict."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=reached_url))
    originator = uuid4()
    sent = records(originator, range(1, 3))
    position = store.append(sent)  # stored, and (as far as the caller knows) the answer was lost
    assert store._append_unless_stored(sent) == position
    unsent = records(originator, range(3, 4))
    assert store._append_unless_stored(unsent) > (position or 0)
    assert [r.originator_version for r in store.select(originator)] == [1, 2, 3]
    with pytest.raises(ConcurrencyError):
        store._append_unless_stored(records(originator, range(3, 5), topic="tests:Other"))
    assert [r.originator_version for r in store.select(originator)] == [1, 2, 3]
    store.close()


def test_one_transaction_appending_twice_keeps_its_positions_unique_and_in_order(
    reached_url: str,
) -> None:
    """A keyed request whose command ran twice appends twice in one transaction."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=reached_url))
    start, first, second = store.last_position(), uuid4(), uuid4()
    with store.remembering(f"twice-{first}", "digest", 0.0):
        store.append(records(first, range(1, 3)))
        store.append(records(second, range(1, 3)))
    feed = store.select_all(start, 10)
    assert [(r.originator_id, r.originator_version) for r in feed] == [
        (first, 1),
        (first, 2),
        (second, 1),
        (second, 2),
    ]
    assert [(r.id or 0) % POSITIONS_PER_TRANSACTION for r in feed] == [0, 1, 2, 3]
    store.close()


def test_migrate_upgrades_a_table_numbered_by_its_sequence(
    postgres: PostgresServer | ExistingPostgres,
) -> None:
    """A table made before positions came from transaction ids: migrate drops the sequence default
    (an older writer then fails instead of writing below the feed's readers), old events keep their
    positions and come first, new ones follow."""
    url = postgres.create_database(f"upgrade_{uuid4().hex[:8]}")
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=url))
    store.create_schema()
    old = uuid4()
    with store.engine.begin() as connection:
        # That version's table announced no writers either (tests/stores/test_postgres_feed.py).
        connection.execute(text("DROP TRIGGER uwsgi_es_announce ON integer_sequenced_items"))
        connection.execute(text("DROP TRIGGER uwsgi_es_position ON integer_sequenced_items"))
        connection.execute(text("CREATE SEQUENCE old_ids"))
        connection.execute(
            text("ALTER TABLE integer_sequenced_items ALTER COLUMN id SET DEFAULT nextval('old_ids')")
        )
        connection.execute(
            text(
                "INSERT INTO integer_sequenced_items (originator_id, originator_version, topic, state) "
                "VALUES (:o, 1, 'tests:Event', '{}'), (:o, 2, 'tests:Event', '{}')"
            ),
            {"o": old},
        )
    store.create_schema()
    with pytest.raises(DBAPIError, match="null value in column"), store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO integer_sequenced_items (originator_id, originator_version, topic, state) "
                "VALUES (:o, 3, 'tests:Event', '{}')"
            ),
            {"o": old},
        )
    new = uuid4()
    store.append(records(new, range(1, 2)))
    assert [(r.originator_id, r.id) for r in store.select_all(0, 10)][:2] == [(old, 1), (old, 2)]
    assert [r.originator_id for r in store.select_all(2, 10)] == [new]
    store.close()


def test_a_held_table_lock_is_waited_for_within_the_lock_timeout(reached_url: str) -> None:
    """Another session holds the events table in SHARE mode (what CREATE INDEX takes): appends and
    readiness give up after UWSGI_ES_LOCK_TIMEOUT with StoreBusyError instead of hanging."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=reached_url, lock_timeout=0.3))
    holder = create_engine(reached_url)
    with holder.connect() as connection:
        connection.execute(text("BEGIN"))
        connection.execute(text("LOCK TABLE integer_sequenced_items IN SHARE MODE"))
        for attempt in (lambda: store.append(records(uuid4(), range(1, 2))), store.check_ready):
            started = time.monotonic()
            with pytest.raises(StoreBusyError, match="UWSGI_ES_LOCK_TIMEOUT"):
                attempt()
            assert time.monotonic() - started < 2
        connection.execute(text("ROLLBACK"))
    holder.dispose()
    store.append(records(uuid4(), range(1, 2)))
    store.check_ready()
    store.close()


def test_a_read_only_server_is_not_ready_until_it_takes_writes_again(postgres_url: str) -> None:
    """default_transaction_read_only (as on a standby after a failover): reads answer, writes and
    readiness fail with StoreReadOnlyError; the same pool writes again once it is turned off."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres_url))
    store.check_ready()  # the pool holds a connection made while the server took writes
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    database = postgres_url.rsplit("/", 1)[1]
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
    store.engine.dispose()  # the setting applies to new sessions, as after a failover
    try:
        store.ping()
        with pytest.raises(StoreReadOnlyError):
            store.check_ready()
        with pytest.raises(StoreReadOnlyError):
            store.append(records(uuid4(), range(1, 2)))
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off'))
        admin.dispose()
    store.engine.dispose()
    store.check_ready()
    store.close()


def test_connections_say_whose_they_are_and_carry_the_session_guards(reached_url: str) -> None:
    """pg_stat_activity names the process holding each connection; the three guards are set."""
    settings = Settings(
        database_url=reached_url, lock_timeout=0.25, statement_timeout=7, idle_in_transaction_timeout=9
    )
    store = SQLAlchemyRecordStore.from_settings(settings)
    with store.engine.connect() as connection:
        name = connection.execute(
            text("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        ).scalar()
        guards = [
            connection.execute(text(f"SHOW {guard}")).scalar()
            for guard in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
        ]
    store.close()
    assert name == f"uwsgi_es process pid {os.getpid()}"
    assert guards == ["250ms", "7s", "9s"]


def test_a_stalled_transaction_holding_the_events_table_is_cut_off_and_writers_go_on(
    reached_url: str,
) -> None:
    """A session locks the events table against inserts and stalls (a hung request, a debugger):
    the server ends it
    after UWSGI_ES_IDLE_IN_TRANSACTION_TIMEOUT (1 s here), so a writer queued behind it stores its
    events well before the stall ends (8 s), within its own lock timeout (5 s)."""
    settings = Settings(database_url=reached_url, idle_in_transaction_timeout=1.0, lock_timeout=5.0)
    stalled, writer = (
        SQLAlchemyRecordStore.from_settings(settings),
        SQLAlchemyRecordStore.from_settings(settings),
    )
    stall_over = threading.Event()
    locked = threading.Event()
    outcome: list[str] = []

    def stall() -> None:
        with stalled.engine.connect() as connection:
            # inside the transaction SQLAlchemy began: a lock that blocks every insert
            connection.execute(text("LOCK TABLE integer_sequenced_items IN EXCLUSIVE MODE"))
            locked.set()
            time.sleep(8)
            stall_over.set()
            try:
                connection.execute(text("SELECT 1"))
                outcome.append("the stalled session was not ended")
            except DBAPIError as exc:
                outcome.append(str(exc.orig))
                assert connection.invalidated, "the ended session was not retired from the pool"

    staller = threading.Thread(target=stall)
    staller.start()
    assert locked.wait(10)
    originator = uuid4()
    writer.append(records(originator, range(1, 2)))
    assert not stall_over.is_set(), "the writer waited for the stall to end"
    assert [r.originator_version for r in writer.select(originator)] == [1]
    staller.join(15)
    assert len(outcome) == 1
    assert "idle-in-transaction timeout" in outcome[0]
    stalled.close()
    writer.close()


@pytest.mark.pgbouncer
class TestPostgresStoreThroughPgBouncer(SQLAlchemyStoreContract, TypedEventsContract, SnapshotsContract):
    """The whole store contract through PgBouncer in transaction pooling, on 3 server connections."""

    @pytest.fixture
    def database_url(self, pgbouncer_url: str) -> str:
        return pgbouncer_url


@pytest.mark.pgbouncer
def test_behind_pgbouncer_nothing_is_prepared_or_left_in_the_session(
    postgres_url: str, pgbouncer_url: str, pgbouncer: PgBouncer
) -> None:
    """The store sees the pooler (and a direct connection as direct). Through it, every transaction
    carries the store's guards, psycopg prepares nothing (a name prepared on one server connection
    is unknown on the next: 'prepared statement "_pg3_0" does not exist'), and nothing is left on
    the server connections for the next client: a plain client holding all of them at once sees
    PostgreSQL's defaults there."""
    settings = Settings(lock_timeout=0.25, statement_timeout=7, idle_in_transaction_timeout=9)
    direct = SQLAlchemyRecordStore.from_settings(replace(settings, database_url=postgres_url))
    pooled = SQLAlchemyRecordStore.from_settings(replace(settings, database_url=pgbouncer_url))
    with direct.engine.connect() as connection:
        assert not is_pooled(connection)
    originator = uuid4()
    for version in range(1, 41):  # psycopg would prepare a statement run 5 times
        pooled.append(records(originator, range(version, version + 1)))
        assert len(pooled.select(originator)) == version
    for _ in range(12):
        with pooled.engine.connect() as connection:
            assert is_pooled(connection)
            assert connection.connection.driver_connection.prepare_threshold is None
            guards = [
                connection.execute(text(f"SHOW {guard}")).scalar()
                for guard in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
            ]
            assert guards == ["250ms", "7s", "9s"]
            prepared = connection.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
            assert prepared == 0
    pooled.close()
    direct.close()
    plain = [
        psycopg.connect(pgbouncer.url(str(make_url(pgbouncer_url).database), driver="postgresql"))
        for _ in range(3)
    ]
    try:
        seen = {
            (
                connection.execute("SELECT pg_backend_pid()").fetchone(),
                connection.execute("SHOW lock_timeout").fetchone(),
            )
            for connection in plain  # each holds its server connection until its transaction ends
        }
    finally:
        for connection in plain:
            connection.close()
    assert len(seen) == 3, "PgBouncer should have given each plain client its own server connection"
    assert {timeout for _, timeout in seen} == {("0",)}
