"""The record-store contract on a real Cassandra node (started by the tests), plus its own rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from uuid import UUID, uuid4

import pytest
from cassandra import WriteTimeout, WriteType
from cassandra.protocol import ErrorMessage

from uwsgi_es.domain import topic_of
from uwsgi_es.errors import ConcurrencyError, OutcomeUnknownError, SchemaMissingError, StoreUnavailableError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import SNAPSHOTS_TABLE, RecordStore, StoredRecord
from uwsgi_es.stores.cassandra.datastore import CAS_WRITE_UNKNOWN, maybe_applied
from uwsgi_es.stores.cassandra.store import TABLE, CassandraRecordStore, _ours
from uwsgi_es.testing.cassandra import CassandraNode

from .contract import RecordStoreContract, records
from .snapshot_contract import Counter, SnapshotsContract
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

    def cut_events(self, store: RecordStore, originator_id: UUID, after_version: int) -> None:
        assert isinstance(store, CassandraRecordStore)
        store.session.execute(
            f"DELETE FROM {store.keyspace}.{TABLE} WHERE originator_id = %s AND originator_version > %s",  # noqa: S608
            (originator_id, after_version),
        )

    def make_old_snapshots_table(
        self, store: RecordStore, originator_id: UUID, version: int, state: str
    ) -> None:
        assert isinstance(store, CassandraRecordStore)
        table = f"{store.keyspace}.{SNAPSHOTS_TABLE}"
        store.session.execute(f"DROP TABLE {table}")
        store.session.execute(
            f"CREATE TABLE {table} (originator_id uuid PRIMARY KEY, originator_version bigint, "
            "topic text, state text)"
        )
        store.session.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)",  # noqa: S608
            (originator_id, version, topic_of(Counter), state),
        )
        store._snapshots = None  # prepared against the dropped table


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
    speculative = profile.speculative_execution_policy
    assert (speculative.delay, speculative.max_attempts) == (0.5, 1)
    store.ping()
    statements = store.statements()
    assert statements.select.is_idempotent
    assert statements.select_after.is_idempotent
    assert not statements.insert.is_idempotent  # a write is never sent twice at once
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


def test_a_cas_result_unknown_counts_as_maybe_applied(cassandra_settings: Settings) -> None:
    """Cassandra 5's "CAS operation result is unknown" (code 0x1700, which the driver passes on as
    a bare ErrorMessage, not a DriverException: it escaped as a 500 before) may have been applied;
    another server error stored nothing. Seen on the three-node cluster under contention."""
    unknown = ErrorMessage(
        CAS_WRITE_UNKNOWN, "CAS operation result is unknown - proposal accepted by 1", None
    )
    assert maybe_applied(unknown)
    assert not maybe_applied(ErrorMessage(0, "server error", None))
    assert maybe_applied(WriteTimeout("a CAS write timed out", write_type=WriteType.CAS))


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


def test_a_write_sent_again_is_told_from_another_writes_by_its_write_id(cassandra_settings: Settings) -> None:
    """The driver sends a write again on another host when a connection breaks; Cassandra then
    answers "not applied" with the rows in the way. Rows of this very write (its write id) mean it
    is stored: success, not a conflict that would run the command, and store it, a second time.
    Identical rows of another write are a conflict."""
    store = CassandraRecordStore.from_settings(cassandra_settings)
    originator = uuid4()
    ours = records(originator, range(1, 3))
    statement, write_id = store._conditional_write(ours)
    assert _ours(store.session.execute(statement), write_id)  # applied
    assert _ours(store.session.execute(statement), write_id)  # sent again: not applied, but ours
    same_rows_another_write, other_id = store._conditional_write(ours)
    assert not _ours(store.session.execute(same_rows_another_write), other_id)
    with pytest.raises(ConcurrencyError):
        store.append(ours)
    assert store.select(originator) == ours
    store.close()


def test_a_conditional_write_without_an_answer_is_settled_by_sending_it_again(
    cassandra_settings: Settings,
) -> None:
    """'Maybe applied', settled against what the node really holds: sent again, the write is
    applied if the first never was (stored once); not applied, the rows in the way are its own
    (success) or another write's (a conflict)."""
    store = CassandraRecordStore.from_settings(cassandra_settings)
    timeout = WriteTimeout("a CAS write timed out", write_type=WriteType.CAS)
    originator = uuid4()
    ours = records(originator, range(1, 3))
    statement, write_id = store._conditional_write(ours)
    store.session.execute(statement)  # the first sending arrived; its answer did not
    assert store._settle(statement, write_id, originator, timeout) is True
    theirs, their_id = store._conditional_write([r._replace(state='{"someone": "else"}') for r in ours])
    assert store._settle(theirs, their_id, originator, timeout) is False
    never_arrived = records(originator, range(3, 5))
    statement, write_id = store._conditional_write(never_arrived)
    assert store._settle(statement, write_id, originator, timeout) is True
    assert store.select(originator) == ours + never_arrived
    store.close()


def test_a_write_no_repeat_can_settle_answers_outcome_unknown(cassandra_settings: Settings) -> None:
    """Every repeat fails (here the driver is shut down under the store): 504's error, which says
    the write may have been stored."""
    store = CassandraRecordStore.from_settings(cassandra_settings)
    originator = uuid4()
    statement, write_id = store._conditional_write(records(originator, range(1, 2)))
    store.cluster.shutdown()
    timeout = WriteTimeout("a CAS write timed out", write_type=WriteType.CAS)
    with pytest.raises(OutcomeUnknownError, match="whether it was stored is unknown"):
        store._settle(statement, write_id, originator, timeout)


def test_migrate_adds_the_write_id_to_a_table_made_before_it(cassandra_settings: Settings) -> None:
    """A keyspace made by an earlier version (no write_id column): the store says to migrate;
    `uwsgi-es migrate` (create_schema) adds the column and keeps the events."""
    settings = replace(cassandra_settings, cassandra_keyspace=f"old_{uuid4().hex[:12]}")
    store = CassandraRecordStore.from_settings(settings)
    store.session.execute(
        f"CREATE KEYSPACE {settings.cassandra_keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    store.session.execute(
        f"CREATE TABLE {settings.cassandra_keyspace}.{TABLE} (originator_id uuid, originator_version bigint, "
        "topic text, state text, PRIMARY KEY ((originator_id), originator_version))"
    )
    originator = uuid4()
    table = f"{settings.cassandra_keyspace}.{TABLE}"
    store.session.execute(
        f"INSERT INTO {table} (originator_id, originator_version, topic, state) VALUES (%s, 1, %s, %s)",  # noqa: S608
        (originator, "tests:Event", '{"n": 1}'),
    )
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.ping()
    store.close()
    store = CassandraRecordStore.from_settings(settings)
    store.create_schema()
    store.create_schema()  # again: nothing to do
    store.append(records(originator, range(2, 3)))
    assert store.select(originator) == records(originator, range(1, 3))
    store.close()
