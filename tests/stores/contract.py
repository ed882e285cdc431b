"""The record-store contract, as tests: every backend's test class inherits them all.

A backend's test module subclasses ``RecordStoreContract`` and provides two fixtures:
``store`` (a new store on an empty, migrated database) and ``make_store`` (another store on
the same database, as a second worker process would have).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from uuid import UUID, uuid4

import pytest

from uwsgi_es.errors import ConcurrencyError, ForkedApplicationError
from uwsgi_es.stores.base import GlobalFeed, RecordStore, RequestScope, StoredRecord

from ..support.forking import in_child


def records(originator: UUID, versions: range, topic: str = "tests:Event") -> list[StoredRecord]:
    return [StoredRecord(originator, v, topic, f'{{"n": {v}}}') for v in versions]


class RecordStoreContract:
    """What every record store promises. Not collected itself (no Test prefix)."""

    has_global_order = True  # stores without one are no GlobalFeed (Cassandra)

    def test_append_then_select_in_version_order(self, store: RecordStore) -> None:
        originator = uuid4()
        store.append(records(originator, range(1, 4)))
        selected = store.select(originator)
        assert [(r.originator_version, r.state) for r in selected] == [
            (1, '{"n": 1}'),
            (2, '{"n": 2}'),
            (3, '{"n": 3}'),
        ]
        assert all(r.originator_id == originator and r.topic == "tests:Event" for r in selected)

    def test_select_pages_through_one_originator(self, store: RecordStore) -> None:
        """``after_version`` and ``limit`` read a stream in pages (long streams, bounded answers)."""
        originator = uuid4()
        store.append(records(originator, range(1, 8)))
        assert [r.originator_version for r in store.select(originator, limit=3)] == [1, 2, 3]
        assert [r.originator_version for r in store.select(originator, after_version=3, limit=3)] == [4, 5, 6]
        assert [r.originator_version for r in store.select(originator, after_version=6)] == [7]
        assert store.select(originator, after_version=7, limit=5) == []

    def test_ready_means_a_write_went_through(self, store: RecordStore) -> None:
        """check_ready() writes (a heartbeat), so a store that only answers reads is not ready."""
        store.check_ready()
        store.check_ready()

    def test_select_of_unknown_originator_is_empty(self, store: RecordStore) -> None:
        assert store.select(uuid4()) == []

    def test_conflicting_batch_stores_nothing(self, store: RecordStore) -> None:
        """A batch whose second record exists is refused whole: its first record is not stored."""
        originator = uuid4()
        store.append(records(originator, range(1, 3)))
        with pytest.raises(ConcurrencyError, match="Nothing was stored"):
            store.append(records(originator, range(2, 4), topic="tests:Other"))
        assert [r.topic for r in store.select(originator)] == ["tests:Event", "tests:Event"]
        with pytest.raises(ConcurrencyError):
            store.append(records(originator, range(3, 4)) + records(originator, range(3, 4)))
        assert len(store.select(originator)) == 2

    def test_select_all_reads_every_originator_in_storage_order(self, store: RecordStore) -> None:
        if not self.has_global_order:
            assert not isinstance(store, GlobalFeed)  # the capability is absent, not refused per call
            return
        assert isinstance(store, GlobalFeed)
        first, second = uuid4(), uuid4()
        store.append(records(first, range(1, 3)))
        store.append(records(second, range(1, 2)))
        store.append(records(first, range(3, 4)))
        everything = store.select_all(0, 100)
        assert [(r.originator_id, r.originator_version) for r in everything] == [
            (first, 1),
            (first, 2),
            (second, 1),
            (first, 3),
        ]
        ids = [r.id for r in everything]
        assert all(isinstance(i, int) for i in ids)
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        page = store.select_all(everything[1].id or 0, 2)
        assert [r.id for r in page] == ids[2:4]
        assert store.select_all(ids[-1] or 0, 100) == []

    def test_concurrent_writers_of_one_version_exactly_one_wins(
        self, store: RecordStore, make_store: Callable[[], RecordStore]
    ) -> None:
        """Eight stores (as eight workers) race to append version 2: one succeeds, seven conflict."""
        originator = uuid4()
        store.append(records(originator, range(1, 2)))
        stores = [make_store() for _ in range(8)]
        barrier = threading.Barrier(len(stores))
        outcomes: list[str] = []

        def race(racer: RecordStore, n: int) -> None:
            barrier.wait()
            try:
                racer.append([StoredRecord(originator, 2, "tests:Event", f'{{"winner": {n}}}')])
                outcomes.append("stored")
            except ConcurrencyError:
                outcomes.append("conflict")
            finally:
                if isinstance(racer, RequestScope):
                    racer.end_request()

        threads = [threading.Thread(target=race, args=(s, n)) for n, s in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for racer in stores:
            racer.close()
        assert sorted(outcomes) == ["conflict"] * 7 + ["stored"]
        assert [r.originator_version for r in store.select(originator)] == [1, 2]

    def test_ping_and_idempotent_schema(self, store: RecordStore) -> None:
        store.create_schema()
        store.create_schema()
        store.ping()

    def test_close_is_idempotent(self, make_store: Callable[[], RecordStore]) -> None:
        extra = make_store()
        extra.ping()
        extra.close()
        extra.close()

    def test_use_from_a_forked_child_is_refused(self, store: RecordStore) -> None:
        """A child must not touch its parent's connections; the parent's store keeps working."""
        originator = uuid4()
        store.append(records(originator, range(1, 2)))
        status, detail = in_child(lambda: store.select(originator))
        assert status == "error"
        assert detail.startswith(ForkedApplicationError.__name__)
        assert in_child(store.close)[0] == "ok"  # closing in the child forgets, never closes, sockets
        assert len(store.select(originator)) == 1

    def test_end_request_releases_every_connection(self, store: RecordStore) -> None:
        originator = uuid4()
        store.append(records(originator, range(1, 2)))
        with pytest.raises(ConcurrencyError):
            store.append(records(originator, range(1, 2)))
        store.select(originator)
        if isinstance(store, RequestScope):
            store.end_request()
        assert store.pool_status().get("checked_out", 0) == 0
