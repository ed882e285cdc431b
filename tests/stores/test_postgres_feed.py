"""PostgreSQL's feed waits only for transactions that may still commit events (issue 29 item 3):
appending transactions announce themselves (the events table's trigger), and the horizon passes
every other transaction, in any database; the lag counts what is stored above the horizon; an
older writer is announced by the trigger, and refused where a reader may have passed its position.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from uwsgi_es.errors import ConcurrencyError, SchemaMissingError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.stores.sqlalchemy.postgres_feed import ANNOUNCE_TRIGGER, POSITION_BITS, POSITION_TRIGGER
from uwsgi_es.testing import PostgresServer
from uwsgi_es.testing.postgres import ExistingPostgres

from ..support.outside_sessions import held_open, outside_transactions
from .contract import records

pytestmark = pytest.mark.postgres
Postgres = PostgresServer | ExistingPostgres
OPERATIONS = 150  # per writer in the tailing test: enough for a horizon missing one case to skip events
# What uwsgi_es before announcements sent to append one event (positions from its own id).
OLDER_WRITER_INSERT = text(
    "INSERT INTO integer_sequenced_items (id, originator_id, originator_version, topic, state) "
    "VALUES (pg_current_xact_id()::text::bigint * 1048576, :o, 1, 'tests:Event', '{}') RETURNING id"
)


@pytest.fixture
def closing() -> Iterator[ExitStack]:
    """Closes the stores and engines a test opens, also when it fails."""
    with ExitStack() as stack:
        yield stack


def store_at(closing: ExitStack, url: str) -> SQLAlchemyRecordStore:
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=url))
    closing.callback(store.close)
    return store


def engine_at(closing: ExitStack, url: str, **options: Any) -> Engine:
    engine = create_engine(url, **options)
    closing.callback(engine.dispose)
    return engine


def test_the_feed_does_not_wait_for_transactions_that_append_no_events(
    closing: ExitStack, postgres: Postgres, postgres_url: str
) -> None:
    """With those outside transactions open, an event appended now is in the feed at once, counted
    by the lag, and the last position; before, the feed showed nothing new until they ended."""
    writer, reader = store_at(closing, postgres_url), store_at(closing, postgres_url)
    start = reader.last_position()
    with outside_transactions(postgres, postgres_url):
        originator = uuid4()
        position = writer.append(records(originator, range(1, 3)))
        feed = reader.select_all(start, 10)
        assert [(r.originator_id, r.originator_version) for r in feed] == [(originator, 1), (originator, 2)]
        assert feed[-1].id == position
        assert reader.last_position() == position
        assert reader.count_after(start, 10) == 2


def test_an_open_appending_transaction_holds_the_feed_and_the_lag_counts_what_it_hides(
    closing: ExitStack, postgres_url: str
) -> None:
    """A writer has appended and not committed: events committed after it stay out of the feed
    (a reader past them would skip the writer's), and the lag counts them; on commit the feed
    shows the writer's events first, then the others, each once."""
    held, writer, reader = (store_at(closing, postgres_url) for _ in range(3))
    start = reader.last_position()
    older = uuid4()
    newer = [uuid4() for _ in range(5)]
    with held.remembering(f"held-{older}", "digest", 0.0):
        held.append(records(older, range(1, 3)))
        for originator in newer:
            writer.append(records(originator, range(1, 2)))
        assert reader.select_all(start, 100) == []
        assert reader.last_position() == start
        assert reader.count_after(start, 100) == 5, "the lag must count the events stored but not shown"
    feed = reader.select_all(start, 100)
    assert [(r.originator_id, r.originator_version) for r in feed] == [
        (older, 1),
        (older, 2),
        *((originator, 1) for originator in newer),
    ]
    assert reader.count_after(start, 100) == 7


def test_a_transaction_that_wrote_before_its_first_event_writes_above_what_readers_passed(
    closing: ExitStack, postgres_url: str
) -> None:
    """A view's session writes (its id is given) and only later appends: while it had not
    announced, readers passed its id; its events get a base given after its announcement, above
    everything they read, so a reader going on from where it stopped sees them. Its second append
    keeps that base."""
    writer, reader, viewer = (store_at(closing, postgres_url) for _ in range(3))
    session = viewer.sessions()
    own_id = int(session.execute(text("SELECT txid_current()")).scalar_one())
    passed = writer.append(records(uuid4(), range(1, 2))) or 0
    after = reader.select_all(0, 1_000_000)[-1].id or 0
    assert after == passed, "a transaction that appends no event held the feed"
    late = uuid4()
    viewer.append(records(late, range(1, 2)))
    viewer.append(records(late, range(2, 3)))
    session.commit()
    viewer.end_request()
    feed = reader.select_all(after, 10)
    assert [(r.originator_id, r.originator_version) for r in feed] == [(late, 1), (late, 2)]
    assert [(r.id or 0) >> POSITION_BITS for r in feed] == [((feed[0].id or 0) >> POSITION_BITS)] * 2
    assert (feed[0].id or 0) >> POSITION_BITS > own_id


def test_an_older_writer_is_announced_and_refused_where_a_reader_may_have_passed_it(
    closing: ExitStack, postgres_url: str
) -> None:
    """An older writer's INSERT (positions from pg_current_xact_id()) is announced by the trigger
    and stored when it is its transaction's first write; when its transaction had an id before,
    it fails rather than write at a position readers may have passed."""
    reader = store_at(closing, postgres_url)
    engine = engine_at(closing, postgres_url)
    with engine.begin() as connection:
        stored = connection.execute(OLDER_WRITER_INSERT, {"o": uuid4()}).scalar_one()
    assert [r.id for r in reader.select_all(stored - 1, 10)] == [stored]
    with engine.connect() as connection:
        connection.execute(text("SELECT txid_current()"))
        with pytest.raises(DBAPIError, match="uwsgi_es refuses an event at position") as refused:
            connection.execute(OLDER_WRITER_INSERT, {"o": uuid4()})
        assert "restart it with the version that ran uwsgi-es migrate" in str(refused.value)
        assert refused.value.orig.sqlstate == "UE001"  # type: ignore[union-attr]
    assert reader.count_after(stored, 10) == 0


def test_a_database_not_upgraded_refuses_appends_and_keeps_the_old_horizon_until_migrate(
    closing: ExitStack, postgres: Postgres
) -> None:
    """An events table made by a version whose writers did not announce themselves (no trigger):
    this version refuses to append (naming migrate), and its readers keep the server-wide horizon,
    which is safe with unannounced writers; `uwsgi-es migrate` (create_schema, twice: idempotent)
    installs the trigger, and the feed then passes outside transactions."""
    url = postgres.create_database(f"older_{uuid4().hex[:8]}")
    store = store_at(closing, url)
    store.create_schema()
    engine = engine_at(closing, url)
    with engine.begin() as connection:  # the triggers gone (or disabled): nothing announces
        connection.execute(text(f"DROP TRIGGER {ANNOUNCE_TRIGGER} ON integer_sequenced_items"))
        connection.execute(text(f"DROP TRIGGER {POSITION_TRIGGER} ON integer_sequenced_items"))
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.append(records(uuid4(), range(1, 2)))
    with engine.begin() as connection:  # the table as the previous version left it
        connection.execute(text("DROP FUNCTION uwsgi_es_position_base()"))
        older = connection.execute(OLDER_WRITER_INSERT, {"o": uuid4()}).scalar_one()
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.append(records(uuid4(), range(1, 2)))
    with held_open(engine, "SELECT txid_current()"):
        with engine.begin() as connection:
            unannounced = connection.execute(OLDER_WRITER_INSERT, {"o": uuid4()}).scalar_one()
        assert [r.id for r in store.select_all(0, 10)] == [older], "an unannounced writer was passed"
    assert [r.id for r in store.select_all(0, 10)] == [older, unannounced]
    store.create_schema()
    store.create_schema()
    with held_open(engine, "SELECT txid_current()"):
        position = store.append(records(uuid4(), range(1, 2)))
        assert store.select_all(unannounced, 10)[-1].id == position


def test_an_announced_transaction_may_idle_only_so_long(closing: ExitStack, postgres_url: str) -> None:
    """It holds every reader of the feed: a session with no idle-in-transaction bound (psql, a
    script) gets one once its transaction appends an event; one with its own keeps it."""
    unbounded = engine_at(closing, postgres_url)
    bounded = engine_at(
        closing, postgres_url, connect_args={"options": "-c idle_in_transaction_session_timeout=7s"}
    )
    for engine, expected in ((unbounded, ["0", "1min"]), (bounded, ["7s", "7s"])):
        with engine.connect() as connection:
            seen = [connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()]
            connection.execute(OLDER_WRITER_INSERT, {"o": uuid4()})
            seen.append(connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one())
            connection.commit()
        assert seen == expected


def test_a_tailing_reader_skips_nothing_while_writers_announce_late_and_others_come_and_go(
    closing: ExitStack, postgres: Postgres, postgres_url: str
) -> None:
    """4 writers, each mixing plain appends, keyed requests whose first append conflicts (rolled
    back to its savepoint, which ends the announcement: the re-run announces again), and view
    sessions that write before appending; 2 sessions (one in another database) open and end
    transactions that append nothing; a reader tails the feed meanwhile. It sees every event
    stored, once, in increasing order, and the same order as a read of the whole feed."""
    stores = [store_at(closing, postgres_url) for _ in range(5)]
    reader, writers = stores[0], stores[1:]
    start = reader.last_position()
    other_url = postgres.create_database(f"other_{uuid4().hex[:8]}")
    quiet_engines = [engine_at(closing, postgres_url), engine_at(closing, other_url)]
    done = threading.Event()
    stored: list[int] = []  # events committed by the writers
    counting = threading.Lock()
    errors: list[BaseException] = []

    def write(store: SQLAlchemyRecordStore, seed: int) -> None:
        chance = random.Random(seed)
        try:
            for i in range(OPERATIONS):
                originator = uuid4()
                kind = i % 3
                if kind == 0:
                    versions = range(1, chance.randint(2, 4))
                    store.append(records(originator, versions))
                    count = len(versions)
                elif kind == 1:
                    store.append(records(originator, range(1, 2)))
                    with store.remembering(f"k-{originator}", "d", 0.0):
                        with pytest.raises(ConcurrencyError):
                            store.append(records(originator, range(1, 2)))
                        time.sleep(chance.random() * 0.01)
                        store.append(records(originator, range(2, 4)))
                    count = 3
                else:
                    session = store.sessions()
                    session.execute(text("SELECT txid_current()"))
                    time.sleep(chance.random() * 0.01)
                    store.append(records(originator, range(1, 3)))
                    session.commit()
                    store.end_request()
                    count = 2
                with counting:
                    stored.append(count)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def come_and_go(engine: Engine, seed: int) -> None:
        chance = random.Random(seed)
        while not done.is_set():
            with engine.connect() as connection:
                connection.execute(text("SELECT txid_current()"))
                time.sleep(chance.random() * 0.02)
                connection.commit()

    seen: list[int] = []

    def tail() -> None:
        after = start
        deadline = time.monotonic() + 60
        while not (done.is_set() and len(seen) >= sum(stored)) and time.monotonic() < deadline:
            page = reader.select_all(after, 100)
            if page:
                seen.extend(r.id or 0 for r in page)
                after = page[-1].id or after
            else:
                time.sleep(0.002)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(writers)]
    quiet = [threading.Thread(target=come_and_go, args=(e, n)) for n, e in enumerate(quiet_engines)]
    tailer = threading.Thread(target=tail)
    for thread in [*threads, *quiet, tailer]:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    for thread in [*quiet, tailer]:
        thread.join(130)
    assert errors == []
    everything = [r.id or 0 for r in reader.select_all(start, 1_000_000)]
    assert len(stored) == 4 * OPERATIONS, "a writer did not finish"
    assert len(everything) == sum(stored)
    assert seen == everything, "the tailing reader skipped or repeated events"
    assert seen == sorted(set(seen))
