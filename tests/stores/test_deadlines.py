"""Database waits bounded per request (issue 29), on real SQLite files and a real PostgreSQL: the
pool's wait is bounded and answered 503 naming it, a request's lock waits are capped at what is
left of its deadline, a request past it sends nothing, and reads waiting for a position hold no
connection and are bounded per process. (Under uWSGI's gevent loop: tests/integration/
test_database_waits.py.)"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, text

from uwsgi_es.errors import (
    DeadlinePassedError,
    PoolExhaustedError,
    ProjectionLagError,
    StoreBusyError,
    TooManyWaitingReadsError,
)
from uwsgi_es.example.balances import Balances
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.readside import projected
from uwsgi_es.readside import status as readside
from uwsgi_es.settings import Settings
from uwsgi_es.stores import deadlines
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.web.status import answer_for

from .contract import records

NOBODY_WROTE = 10**18


@contextmanager
def request_arrived(seconds_ago: float = 0.0) -> Iterator[None]:
    """Serve as a request that arrived ``seconds_ago`` (the web layer starts the clock)."""
    token = deadlines.start()
    try:
        time.sleep(seconds_ago)
        yield
    finally:
        deadlines.stop(token)


@contextmanager
def sqlite_write_lock(url: str) -> Iterator[None]:
    """Another connection holding SQLite's write lock (not the writers' queue of uwsgi_es)."""
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextmanager
def share_lock(url: str) -> Iterator[None]:
    """Another session holding the events table in SHARE mode, as CREATE INDEX does."""
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(text("LOCK TABLE integer_sequenced_items IN SHARE MODE"))
        try:
            yield
        finally:
            connection.rollback()
    engine.dispose()


def timed_busy(write: object) -> float:
    started = time.monotonic()
    with pytest.raises(StoreBusyError):
        write()  # type: ignore[operator]
    return time.monotonic() - started


def test_an_exhausted_sqlite_pool_answers_503_naming_it_after_the_pool_timeout(sqlite_url: str) -> None:
    """Every pooled connection held: the next operation waits UWSGI_ES_POOL_TIMEOUT (SQLite engines
    take it too; they waited SQLAlchemy's 30 s) and fails with a 503 naming the pool's settings."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=sqlite_url, pool_timeout=0.3))
    held = [store.engine.connect() for _ in range(15)]  # SQLite's pool: 5, and 10 overflow
    started = time.monotonic()
    with pytest.raises(PoolExhaustedError) as refused:
        store.select(uuid4())
    took = time.monotonic() - started
    for connection in held:
        connection.close()
    assert 0.3 <= took < 2, took
    assert "UWSGI_ES_POOL_TIMEOUT" in str(refused.value)
    assert "UWSGI_ES_POOL_SIZE" in str(refused.value)
    answer = answer_for(refused.value)
    assert answer is not None
    assert answer.status == 503
    assert answer.message == "the event store is busy: every database connection of this worker is in use"
    assert store.select(uuid4()) == []  # given back: served again
    store.close()


def test_a_request_past_its_deadline_sends_nothing(sqlite_url: str) -> None:
    """A request that waited its whole bound before its database work (queued behind others) is
    refused before its first statement, and nothing is stored; outside a request, no deadline."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=sqlite_url, sqlite_busy_timeout_ms=200))
    originator = uuid4()
    with request_arrived(seconds_ago=0.25), pytest.raises(DeadlinePassedError, match="BUSY_TIMEOUT"):
        store.append(records(originator, range(1, 2)))
    assert store.select(originator) == []
    store.append(records(originator, range(1, 2)))
    assert len(store.select(originator)) == 1
    store.close()


def test_time_spent_on_the_client_is_not_counted(sqlite_url: str) -> None:
    """Waiting for the client's body (or a projection) does not eat the database's bound."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=sqlite_url, sqlite_busy_timeout_ms=200))
    with request_arrived():
        with deadlines.not_counted():
            time.sleep(0.3)
        assert store.select(uuid4()) == []
    store.close()


def test_a_sqlite_write_waits_only_what_is_left_of_its_bound(sqlite_url: str) -> None:
    """Another connection holds the write lock: a request that arrived 0.4 s ago, with a busy
    timeout of 1 s, gives up about 0.6 s later (it waited 1 s more); the next request, or work
    outside a request, gets the whole bound again."""
    store = SQLAlchemyRecordStore.from_settings(
        Settings(database_url=sqlite_url, sqlite_busy_timeout_ms=1000)
    )
    with sqlite_write_lock(sqlite_url):
        with request_arrived(seconds_ago=0.4):
            capped = timed_busy(lambda: store.append(records(uuid4(), range(1, 2))))
        whole = timed_busy(lambda: store.append(records(uuid4(), range(1, 2))))
    assert 0.4 <= capped < 0.85, capped
    assert whole >= 0.95, whole
    assert store.select_all(0, 10) == []
    store.close()


def test_a_postgres_lock_wait_is_capped_at_what_is_left_of_the_deadline(postgres_url: str) -> None:
    """A session holds the events table (SHARE): an append of a request that arrived 0.4 s ago
    (UWSGI_ES_LOCK_TIMEOUT 1 s) gives up about 0.6 s later, alone (the session's lock_timeout) and
    inside a keyed request's transaction (SET LOCAL); the next request waits the whole bound again."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres_url, lock_timeout=1.0))
    with share_lock(postgres_url):
        with request_arrived(seconds_ago=0.4):
            alone = timed_busy(lambda: store.append(records(uuid4(), range(1, 2))))

        def keyed() -> None:
            with store.remembering(str(uuid4()), "digest", 0.0):
                store.append(records(uuid4(), range(1, 2)))

        with request_arrived(seconds_ago=0.4):
            in_transaction = timed_busy(keyed)
        with request_arrived():
            whole = timed_busy(lambda: store.append(records(uuid4(), range(1, 2))))
    assert 0.4 <= alone < 0.85, alone
    assert 0.4 <= in_transaction < 0.85, in_transaction
    assert whole >= 0.95, whole
    assert store.select_all(0, 10) == []
    store.close()


@pytest.fixture
def bank(sqlite_url: str) -> Iterator[BankAccounts]:
    app = BankAccounts.from_settings(
        Settings(database_url=sqlite_url, read_wait=1.0, max_waiting_reads=30, pool_timeout=3.0)
    )
    yield app
    app.close()


def test_waiting_reads_hold_no_connection(bank: BankAccounts) -> None:
    """20 reads wait at once for a position nobody wrote, more than the pool's 15 connections: the
    pool is never near empty while they wait (each looks with a short-lived connection), and each
    answers ProjectionLagError after UWSGI_ES_READ_WAIT, none delayed by a wait for the pool."""
    outcomes: list[tuple[str, float]] = []
    checked_out: list[int] = []

    def read() -> None:
        started = time.monotonic()
        try:
            with projected(bank, Balances, NOBODY_WROTE):
                outcomes.append(("read", time.monotonic() - started))
        except Exception as exc:
            outcomes.append((type(exc).__name__, time.monotonic() - started))

    threads = [threading.Thread(target=read) for _ in range(20)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        checked_out.append(bank.records.pool_status()["checked_out"])
        time.sleep(0.001)
    assert [outcome for outcome, _ in outcomes] == ["ProjectionLagError"] * 20, outcomes
    assert max(took for _, took in outcomes) < 1.0 + 0.5, sorted(took for _, took in outcomes)
    assert max(checked_out) < 10, max(checked_out)
    assert bank.records.pool_status() == {"checked_out": 0}


def test_reads_over_the_waiting_bound_are_refused_at_once(sqlite_url: str) -> None:
    """UWSGI_ES_MAX_WAITING_READS=2: two reads wait, a third is refused at once naming the bound
    and the setting (503, shown to clients); a read whose position is reached never waits."""
    app = BankAccounts.from_settings(Settings(database_url=sqlite_url, read_wait=2.0, max_waiting_reads=2))
    waiting = [threading.Thread(target=_wait_in_vain, args=(app,)) for _ in range(2)]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 5
    while readside._waiting < 2:
        assert time.monotonic() < deadline, "the two reads never waited"
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(TooManyWaitingReadsError) as refused, projected(app, Balances, NOBODY_WROTE):
        pass
    took = time.monotonic() - started
    with projected(app, Balances, 0) as connection:  # asks for no position: never waits
        assert Balances.top(connection, 1) == []
    for thread in waiting:
        thread.join(10)
    app.close()
    assert took < 0.5, took
    assert "2 reads waiting" in str(refused.value)
    assert "UWSGI_ES_MAX_WAITING_READS" in str(refused.value)
    answer = answer_for(refused.value)
    assert answer is not None
    assert (answer.status, answer.message, answer.retry_after) == (503, str(refused.value), True)
    assert readside._waiting == 0


def _wait_in_vain(app: BankAccounts) -> None:
    with pytest.raises(ProjectionLagError), projected(app, Balances, NOBODY_WROTE):
        pass


def test_deadlines_outside_a_request_are_the_bound() -> None:
    assert deadlines.left(5.0) == 5.0
    assert deadlines.wait_limit(5.0) == 5.0
    assert not deadlines.slices_waits()
