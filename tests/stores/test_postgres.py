"""The record-store contract on a real PostgreSQL server (started by the tests), plus its own rules."""

from __future__ import annotations

import os
import threading
import time
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from uwsgi_es.errors import SchemaMissingError, StoreBusyError, StoreReadOnlyError, StoreUnavailableError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.stores.sqlalchemy.schema import LOCK_FOR_APPEND
from uwsgi_es.testing import PostgresServer
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


def test_pool_settings_reach_the_engine(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url, pool_size=3, max_overflow=2, pool_timeout=1.5)
    store = SQLAlchemyRecordStore.from_settings(settings)
    pool = store.engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 2, 1.5)  # type: ignore[attr-defined]
    assert pool._pre_ping is True
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


def test_writers_hold_the_append_lock_only_inside_their_transaction(postgres_url: str) -> None:
    """The feed's lock queues writers, never readers, and is gone when the append ends."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres_url))
    store.append(records(uuid4(), range(1, 2)))
    with store.engine.connect() as connection:
        held = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE mode = 'ExclusiveLock' AND relation IS NOT NULL")
        ).scalar()
    assert held == 0
    store.close()


def test_a_held_table_lock_is_waited_for_within_the_lock_timeout(postgres_url: str) -> None:
    """Another session holds the events table in SHARE mode (what CREATE INDEX takes): appends and
    readiness give up after UWSGI_ES_LOCK_TIMEOUT with StoreBusyError instead of hanging."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres_url, lock_timeout=0.3))
    holder = create_engine(postgres_url)
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


def test_connections_say_whose_they_are_and_carry_the_session_guards(postgres_url: str) -> None:
    """pg_stat_activity names the process holding each connection; the three guards are set."""
    settings = Settings(
        database_url=postgres_url, lock_timeout=0.25, statement_timeout=7, idle_in_transaction_timeout=9
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


def test_a_stalled_transaction_holding_the_append_lock_is_cut_off_and_writers_go_on(
    postgres_url: str,
) -> None:
    """A session takes the append lock and stalls (a hung request, a debugger): the server ends it
    after UWSGI_ES_IDLE_IN_TRANSACTION_TIMEOUT (1 s here), so a writer queued behind it stores its
    events well before the stall ends (8 s), within its own lock timeout (5 s)."""
    settings = Settings(database_url=postgres_url, idle_in_transaction_timeout=1.0, lock_timeout=5.0)
    stalled, writer = (
        SQLAlchemyRecordStore.from_settings(settings),
        SQLAlchemyRecordStore.from_settings(settings),
    )
    stall_over = threading.Event()
    locked = threading.Event()
    outcome: list[str] = []

    def stall() -> None:
        with stalled.engine.connect() as connection:
            connection.execute(LOCK_FOR_APPEND)  # inside the transaction SQLAlchemy began
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
