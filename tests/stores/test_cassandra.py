"""The record-store contract on a real Cassandra node (started by the tests), plus its own rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from uuid import uuid4

import pytest
from cassandra import WriteTimeout, WriteType
from cassandra.protocol import ErrorMessage

from uwsgi_es.errors import ConcurrencyError, SchemaMissingError, StoreUnavailableError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import RecordStore, StoredRecord
from uwsgi_es.stores.cassandra import CAS_WRITE_UNKNOWN, CassandraRecordStore, maybe_applied
from uwsgi_es.testing.cassandra import CassandraNode

from .contract import RecordStoreContract, records
from .snapshot_contract import SnapshotsContract
from .typed_contract import TypedEventsContract

pytestmark = pytest.mark.cassandra


class TestCassandraStore(RecordStoreContract, TypedEventsContract, SnapshotsContract):
    has_global_order = False

    @pytest.fixture
    def make_store(self, cassandra_settings: Settings) -> Callable[[], RecordStore]:
        return lambda: CassandraRecordStore.from_settings(cassandra_settings)

    @pytest.fixture
    def store(self, make_store: Callable[[], RecordStore]) -> Iterator[RecordStore]:
        store = make_store()
        yield store
        store.close()


def test_statements_are_prepared_once_per_store(cassandra_settings: Settings) -> None:
    store = CassandraRecordStore.from_settings(cassandra_settings)
    store.ping()
    prepared = store.statements()
    store.append(records(uuid4(), range(1, 3)))
    assert store.statements() is prepared
    store.close()


def test_session_uses_the_explicit_policy_protocol_and_consistency(cassandra_settings: Settings) -> None:
    store = CassandraRecordStore.from_settings(cassandra_settings)
    profile = store.cluster.profile_manager.default
    assert type(profile.load_balancing_policy).__name__ == "TokenAwarePolicy"
    assert profile.load_balancing_policy._child_policy.local_dc == "datacenter1"
    assert store.cluster.protocol_version == 5
    assert (profile.consistency_level, profile.serial_consistency_level) == (
        6,
        9,
    )  # LOCAL_QUORUM, LOCAL_SERIAL
    assert store.cluster.connection_class.__name__ == "LibevConnection"
    store.close()


def test_batch_repeating_a_version_stores_nothing(cassandra_settings: Settings) -> None:
    store = CassandraRecordStore.from_settings(cassandra_settings)
    originator = uuid4()
    with pytest.raises(ConcurrencyError, match="repeats a version"):
        store.append([StoredRecord(originator, 1, "t", "{}"), StoredRecord(originator, 1, "t", '{"x": 1}')])
    assert store.select(originator) == []
    store.close()


def test_missing_keyspace_says_to_migrate(cassandra_settings: Settings) -> None:
    store = CassandraRecordStore.from_settings(
        replace(cassandra_settings, cassandra_keyspace="never_created")
    )
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.ping()
    store.close()


def test_a_cas_result_unknown_is_settled_at_serial_and_a_lost_round_is_a_conflict(
    cassandra_settings: Settings,
) -> None:
    """Cassandra 5's "CAS operation result is unknown" (code 0x1700, which the driver passes on as
    a bare ErrorMessage, not a DriverException: it escaped as a 500 before): ours at SERIAL is
    success; nothing there means the round was lost to a concurrent writer, a conflict the
    command retries. Seen on the three-node cluster under contention."""
    store = CassandraRecordStore.from_settings(cassandra_settings)
    unknown = ErrorMessage(
        CAS_WRITE_UNKNOWN, "CAS operation result is unknown - proposal accepted by 1", None
    )
    assert maybe_applied(unknown)
    assert not maybe_applied(ErrorMessage(0, "server error", None))
    originator = uuid4()
    ours = records(originator, range(1, 2))
    store.append(ours)
    assert store._resolve_timeout(originator, ours, unknown) is True
    with pytest.raises(ConcurrencyError, match="lost a Paxos round"):
        store._resolve_timeout(originator, records(originator, range(2, 3)), unknown)
    store.close()


def test_unreachable_node_is_unavailable(cassandra: CassandraNode) -> None:
    settings = Settings(store="cassandra", cassandra_port=cassandra.storage_port + 1, connect_timeout=2)
    with pytest.raises(StoreUnavailableError, match=r"cassandra store at 127\.0\.0\.1"):
        CassandraRecordStore.from_settings(settings)


def test_the_driver_logs_no_warnings(cassandra_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """Explicit protocol version and load-balancing policy: no downgrade or policy warnings."""
    with caplog.at_level("WARNING", logger="cassandra"):
        store = CassandraRecordStore.from_settings(cassandra_settings)
        store.ping()
        store.append(records(uuid4(), range(1, 2)))
        store.close()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("cassandra")] == []


def test_a_timed_out_conditional_write_is_resolved_by_reading_at_serial(cassandra_settings: Settings) -> None:
    """'Maybe applied': ours at SERIAL means success, someone else's means a conflict, nothing
    there means nothing was stored (503, try again). Checked against what the node really holds."""
    store = CassandraRecordStore.from_settings(cassandra_settings)
    timeout = WriteTimeout("simulated timeout of a CAS write", write_type=WriteType.CAS)
    originator = uuid4()
    ours = records(originator, range(1, 3))
    store.append(ours)
    assert store._resolve_timeout(originator, ours, timeout) is True
    theirs = [r._replace(state='{"someone": "else"}') for r in ours]
    assert store._resolve_timeout(originator, theirs, timeout) is False
    missing = records(originator, range(3, 4))
    with pytest.raises(StoreUnavailableError, match="was not applied"):
        store._resolve_timeout(originator, missing, timeout)
    store.close()
