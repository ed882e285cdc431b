"""Snapshots and the aggregate cache through a real store: every backend's test class inherits
these (with ``store`` and ``make_store`` fixtures, as for ``RecordStoreContract``).

Loads are watched by wrapping the real store's ``select`` (a spy that counts, never a stand-in):
a snapshot or a cached copy must spare the replay of the events before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest

from uwsgi_es import transcoding
from uwsgi_es.application import Application, PubSub
from uwsgi_es.domain import Aggregate, replay, topic_of
from uwsgi_es.settings import Settings
from uwsgi_es.snapshots import event_digest
from uwsgi_es.stores.base import SNAPSHOTS_TABLE, RecordStore, Snapshot, SnapshotStore, StoredRecord
from uwsgi_es.transcoding import aggregate_codec_for


class Counter(Aggregate):
    """A tally with a typed attribute (a UUID) among plain ones."""

    total: int
    last_by: UUID | None

    @dataclass(frozen=True)
    class Started(Aggregate.Created):
        def apply(self, counter: Any) -> None:
            counter.total, counter.last_by, counter.notes = 0, None, []

    @dataclass(frozen=True)
    class Added(Aggregate.Event):
        amount: int
        by: UUID

        def apply(self, counter: Any) -> None:
            counter.total += self.amount
            counter.last_by = self.by
            counter.notes.append(self.amount)

    @classmethod
    def start(cls) -> Counter:
        return cls.create_from(cls.Started)

    def add(self, amount: int) -> None:
        self.trigger_event(self.Added, amount=amount, by=uuid4())


class Unannotated(Aggregate):
    """Keeps a UUID in an attribute it does not annotate: a snapshot would read it back a str."""

    @dataclass(frozen=True)
    class Started(Aggregate.Created):
        def apply(self, thing: Any) -> None:
            thing.owner = self.originator_id

    @dataclass(frozen=True)
    class Touched(Aggregate.Event):
        pass


def application(store: RecordStore, **settings: Any) -> Application:
    return Application(store, settings=Settings(**settings), bus=PubSub())


def selected_rows(store: RecordStore) -> list[int]:
    """Wrap the store's real ``select``: the list fills with how many rows each call returned."""
    counts: list[int] = []
    real = store.select

    def select(*args: Any, **kwargs: Any) -> list[StoredRecord]:
        rows = real(*args, **kwargs)
        counts.append(len(rows))
        return rows

    store.select = select  # type: ignore[method-assign]
    return counts


def counter_with(app: Application, additions: int) -> Counter:
    counter = Counter.start()
    for n in range(additions):
        counter.add(n)
        if n % 7 == 6:
            app.save(counter)
    app.save(counter)
    return counter


class SnapshotsContract:
    """Not collected itself (no Test prefix). The SQL stores' hooks are here; Cassandra overrides them."""

    def cut_events(self, store: RecordStore, originator_id: UUID, after_version: int) -> None:
        """Delete the events after ``after_version`` (an events table restored from an older
        backup, or trailing rows deleted by hand)."""
        from sqlalchemy import delete

        from uwsgi_es.stores.sqlalchemy.schema import records_table

        with store.engine.begin() as connection:  # type: ignore[attr-defined]
            connection.execute(
                delete(records_table).where(
                    records_table.c.originator_id == originator_id,
                    records_table.c.originator_version > after_version,
                )
            )

    def make_old_snapshots_table(
        self, store: RecordStore, originator_id: UUID, version: int, state: str
    ) -> None:
        """The snapshots table as uwsgi_es made it before snapshots remembered their event, holding
        one snapshot of ``originator_id``."""
        from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, Uuid, insert

        from uwsgi_es.stores.sqlalchemy.schema import snapshots_table

        old = Table(
            SNAPSHOTS_TABLE,
            MetaData(),
            Column("originator_id", Uuid(), primary_key=True),
            Column("originator_version", BigInteger(), nullable=False),
            Column("topic", String(255), nullable=False),
            Column("state", Text(), nullable=False),
        )
        engine = store.engine  # type: ignore[attr-defined]
        snapshots_table.drop(engine)
        old.create(engine)
        with engine.begin() as connection:
            connection.execute(
                insert(old).values(
                    originator_id=originator_id,
                    originator_version=version,
                    topic=topic_of(Counter),
                    state=state,
                )
            )

    def test_a_snapshot_remembers_the_event_it_was_taken_at(self, store: RecordStore) -> None:
        """The digest of the stored event at the snapshot's version is kept with it."""
        assert isinstance(store, SnapshotStore)
        app = application(store, snapshot_interval=10, aggregate_cache=0)
        counter = counter_with(app, 24)
        snapshot = store.latest_snapshot(counter.id)
        assert snapshot is not None
        assert snapshot.originator_version == 22
        at_22 = store.select(counter.id, after_version=21, limit=1)[0]
        assert snapshot.last_event == event_digest(at_22)

    def test_a_snapshot_whose_event_is_stored_otherwise_is_ignored(
        self, store: RecordStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Events cut back under a snapshot, then written again up to and past its version: the
        snapshot's state is stale although an event is stored at its version. It is ignored (logged
        once, naming the aggregate and the version) and the aggregate replayed from its events."""
        assert isinstance(store, SnapshotStore)
        app = application(store, snapshot_interval=10, aggregate_cache=0)
        counter = counter_with(app, 24)  # additions 0..23: a snapshot at 22 of a total of 210
        snapshot = store.latest_snapshot(counter.id)
        assert snapshot is not None
        assert snapshot.originator_version == 22
        self.cut_events(store, counter.id, 1)
        rewriter = application(store, snapshot_interval=0, aggregate_cache=0)  # takes no snapshot
        again = rewriter.get(counter.id, Counter)
        assert again.version == 1
        for _ in range(24):
            again.add(1000)
        rewriter.save(again)
        assert store.latest_snapshot(counter.id) == snapshot  # still there, at version 22
        rows = selected_rows(store)
        with caplog.at_level(logging.WARNING, logger="uwsgi_es"):
            loaded = app.get(counter.id, Counter)
            app.get(counter.id, Counter)
        assert (loaded.version, loaded.total) == (25, 24_000), "the stale snapshot was used"
        assert rows == [4, 25, 4, 25], "expected the snapshot's events, then a replay from the first"
        stale = [r.getMessage() for r in caplog.records if "is stale" in r.getMessage()]
        assert len(stale) == 1, caplog.text
        assert f"snapshot of {counter.id} at version 22" in stale[0]

    def test_a_snapshot_of_events_cut_back_below_it_is_ignored(self, store: RecordStore) -> None:
        """Events cut back below a snapshot's version: no event is stored at its version, the
        aggregate is what its events fold to."""
        app = application(store, snapshot_interval=10, aggregate_cache=0)
        counter = counter_with(app, 24)
        self.cut_events(store, counter.id, 5)
        loaded = app.get(counter.id, Counter)
        assert (loaded.version, loaded.total) == (5, sum(range(4)))

    def test_a_snapshot_without_the_digest_is_ignored_and_migrate_adds_the_column(
        self, store: RecordStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A snapshots table made by an older uwsgi_es: migrate adds the column; its snapshots
        (no digest: nothing proves they match the events) are ignored until retaken."""
        assert isinstance(store, SnapshotStore)
        app = application(store, snapshot_interval=10, aggregate_cache=0)
        counter = counter_with(app, 24)
        at_22 = replay(app.event_store.get(counter.id)[:22])
        assert isinstance(at_22, Counter)
        at_22.total = 99_000_000  # what no fold of the events gives
        stale = aggregate_codec_for(Counter).encode(at_22)
        assert stale is not None
        self.make_old_snapshots_table(store, counter.id, 22, stale)
        store.create_schema()
        kept = store.latest_snapshot(counter.id)
        assert kept is not None
        assert (kept.originator_version, kept.last_event) == (22, None)
        with caplog.at_level(logging.WARNING, logger="uwsgi_es"):
            assert app.get(counter.id, Counter).total == sum(range(24))
        assert "stored without the digest of their event" in caplog.text
        for _ in range(3):  # snapshots are stored with their digest again
            loaded = app.get(counter.id, Counter)
            for _ in range(4):
                loaded.add(1)
            app.save(loaded)
        retaken = store.latest_snapshot(counter.id)
        assert retaken is not None
        assert retaken.last_event is not None
        assert retaken.originator_version > 30
        assert app.get(counter.id, Counter).total == sum(range(24)) + 12

    def test_a_long_stream_loads_from_its_latest_snapshot(self, store: RecordStore) -> None:
        assert isinstance(store, SnapshotStore)
        app = application(store, snapshot_interval=10, aggregate_cache=0)
        # Saved at versions 8, 15, 22 and 25: the saves to 15 and 22 crossed 10 and 20.
        counter = counter_with(app, 24)
        snapshot = store.latest_snapshot(counter.id)
        assert snapshot is not None
        assert snapshot.originator_version == 22
        rows = selected_rows(store)
        loaded = app.get(counter.id, Counter)
        assert rows == [4], "expected the events from the snapshot's version on: 22..25"
        full = replay(app.event_store.get(counter.id))
        assert vars(loaded) == vars(full)
        assert type(loaded.last_by) is UUID

    def test_an_older_snapshot_never_replaces_a_later_one(self, store: RecordStore) -> None:
        """SQL stores keep the later one; Cassandra's plain upsert may not, which only means more
        events to replay: either way the load is right."""
        assert isinstance(store, SnapshotStore)
        app = application(store, snapshot_interval=10, aggregate_cache=0)
        counter = counter_with(app, 24)
        at_ten = replay(app.event_store.get(counter.id)[:10])
        state = aggregate_codec_for(Counter).encode(at_ten)
        assert state is not None
        digest = event_digest(store.select(counter.id, after_version=9, limit=1)[0])
        store.save_snapshot(Snapshot(counter.id, 10, topic_of(Counter), state, digest))
        kept = store.latest_snapshot(counter.id)
        assert kept is not None
        if self.has_global_order:  # type: ignore[attr-defined]  # the SQL stores
            assert kept.originator_version == 22
        assert app.get(counter.id, Counter).total == sum(range(24))

    def test_a_snapshot_of_an_older_class_version_is_upcast(self, store: RecordStore) -> None:
        app = application(store, snapshot_interval=6, aggregate_cache=0)
        counter = counter_with(app, 9)  # saved at 8 (crossing 6: a snapshot, class_version 1) and 10
        snapshot = store.latest_snapshot(counter.id)  # type: ignore[attr-defined]
        assert snapshot.originator_version == 8
        original = Counter.Added.apply
        try:  # the next deployment: notes are counted, not listed (class_version 2)
            Counter.class_version = 2
            Counter.upcast_v1_v2 = staticmethod(_notes_become_count)  # type: ignore[attr-defined]
            Counter.Added.apply = _count_notes  # type: ignore[method-assign]
            transcoding._aggregate_codecs.clear()
            loaded = app.get(counter.id, Counter)
            assert loaded.notes == 9  # type: ignore[attr-defined]  # 7 upcast, then 2 applied
        finally:
            Counter.class_version = 1
            del Counter.upcast_v1_v2  # type: ignore[attr-defined]
            Counter.Added.apply = original  # type: ignore[method-assign]
            transcoding._aggregate_codecs.clear()

    def test_state_that_would_not_read_back_equal_is_never_snapshotted(
        self, store: RecordStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert isinstance(store, SnapshotStore)
        app = application(store, snapshot_interval=2, aggregate_cache=10)
        thing = Unannotated.create_from(Unannotated.Started)
        for _ in range(5):
            thing.trigger_event(Unannotated.Touched)
        with caplog.at_level(logging.WARNING, logger="uwsgi_es"):
            app.save(thing)
            loaded = app.get(thing.id, Unannotated)
        assert store.latest_snapshot(thing.id) is None
        assert type(loaded.owner) is UUID  # type: ignore[attr-defined]
        assert "annotate these attributes on the class with their types: owner" in caplog.text

    def test_workers_writing_one_aggregate_alternately_never_act_on_stale_state(
        self, store: RecordStore, make_store: Callable[[], RecordStore]
    ) -> None:
        """Two applications (two workers, each with its cache) add to one counter in turn: each
        command reads the other's events forward from its cached copy, so every add lands on
        the current total, and each cache is used."""
        first = application(store, snapshot_interval=0, aggregate_cache=100)
        other_store = make_store()
        second = application(other_store, snapshot_interval=0, aggregate_cache=100)
        counter = Counter.start()
        first.save(counter)
        for n in range(1, 21):
            writer = first if n % 2 else second
            loaded = writer.get(counter.id, Counter)
            assert loaded.total == sum(range(n)), f"add {n} saw a stale total"
            loaded.add(n)
            writer.save(loaded)
        assert first.get(counter.id, Counter).total == sum(range(21))
        assert second.get(counter.id, Counter).version == 21
        for app in (first, second):
            assert app.snapshots.cache is not None
            assert app.snapshots.cache.hits >= 9
        other_store.close()

    def test_a_cached_copy_whose_last_event_is_not_stored_is_dropped(self, store: RecordStore) -> None:
        """A cache entry remembering an event the store does not hold (its transaction rolled
        back) is detected at the next load and the aggregate is read afresh."""
        app = application(store, snapshot_interval=0, aggregate_cache=100)
        counter = counter_with(app, 3)
        app.get(counter.id, Counter)  # cached at version 4
        assert app.snapshots.cache is not None
        entry = app.snapshots.cache.get(counter.id)
        assert entry is not None
        phantom = entry._replace(version=5, last_event=(entry.last_event[0], '{"amount": 99}'))
        app.snapshots.cache.put(counter.id, phantom)
        loaded = app.get(counter.id, Counter)
        assert (loaded.version, loaded.total) == (4, sum(range(3)))
        assert app.snapshots.cache.stale == 1


def _count_notes(self: Any, counter: Any) -> None:
    counter.total += self.amount
    counter.last_by = self.by
    counter.notes += 1


def _notes_become_count(state: dict[str, Any]) -> None:
    state["notes"] = len(state["notes"])
