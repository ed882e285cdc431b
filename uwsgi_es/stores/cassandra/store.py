"""The Cassandra record store: one partition per aggregate, lightweight transactions for concurrency.

Why it looks the way it does:

- Table ``integer_sequenced_items``: ``originator_id`` is the partition key and
  ``originator_version`` the clustering key, so an aggregate's events share one partition (reads
  are one partition scan, in version order) and a conditional batch may cover them.
- Optimistic concurrency: every insert is ``IF NOT EXISTS`` (a lightweight transaction, Paxos).
  A batch holds one aggregate's events only, so it stays inside one partition and is all or
  nothing. Plain writes are never mixed with LWT writes on these partitions.
- Each append marks its rows with a new ``write_id``. ``[applied]`` false comes with the rows
  that hold the versions: another write's id means a conflict (nothing stored); this write's own
  id means it was stored by an earlier sending of the same statement (the driver sends a write
  again on another host when a connection breaks), which is success, never a conflict that would
  make the command run, and store, a second time.
- A timeout on a conditional write means "maybe applied". It is settled by sending the same
  write again (``settle``): its result says stored or conflict, as above. Only when no repeat gets
  an answer is the outcome unknown (504).
- Reads are marked idempotent, so a read its coordinator leaves unanswered for
  ``UWSGI_ES_CASSANDRA_SPECULATIVE_DELAY`` also goes to another replica. A first write never does
  (only ``settle``'s repeats, whose outcome is read either way).
- Connecting, preparing, settling and the driver's errors are the datastore's
  (``stores.cassandra.datastore``, shared with the eventsourcing library's recorders):
  ``from_settings`` connects in the process that uses it, after the fork; ``close()`` shuts the
  cluster down, except in a forked child, where it only forgets.
- Cassandra keeps no global order of events, so this store is no ``GlobalFeed``: applications on
  it have no ``/events`` feed, and the read side refuses to start a runner on it.
- ``/ready`` writes a counter in ``uwsgi_es_heartbeat`` (its own table: counters never share a
  partition with the events' lightweight transactions) at the configured consistency.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any
from uuid import UUID, uuid4

from cassandra.cluster import Cluster, Session
from cassandra.query import PreparedStatement

from uwsgi_es.errors import ConcurrencyError, StoreUnavailableError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import (
    HEARTBEAT_TABLE,
    SNAPSHOTS_TABLE,
    RecordStore,
    Snapshot,
    StoredRecord,
    version_conflict,
)
from uwsgi_es.stores.cassandra.datastore import CassandraConfig, CassandraDatastore, one_partition

TABLE = "integer_sequenced_items"


@dataclass(frozen=True)
class _Statements:
    insert: PreparedStatement
    select: PreparedStatement
    select_after: PreparedStatement


class CassandraRecordStore(RecordStore):
    """Records in ``<keyspace>.integer_sequenced_items`` on a Cassandra cluster."""

    def __init__(self, datastore: CassandraDatastore, settings: Settings) -> None:
        super().__init__()
        self.datastore = datastore
        self.settings = settings
        self.keyspace = datastore.config.keyspace
        self._statements: _Statements | None = None
        self._snapshots: tuple[PreparedStatement, PreparedStatement] | None = None
        self._prepare_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraRecordStore:
        """Connect (in this process, after the fork). Statements are prepared at the first ping."""
        datastore = CassandraDatastore(
            CassandraConfig.from_settings(settings),
            name=settings.describe_store(),
            migrate="UWSGI_ES_STORE=cassandra uwsgi-es migrate",
        )
        datastore.session()
        return cls(datastore, settings)

    @property
    def session(self) -> Session:
        return self.datastore.session()

    @property
    def cluster(self) -> Cluster | None:
        return self.datastore.cluster

    def describe(self) -> str:
        return self.settings.describe_store()

    def create_schema(self) -> None:
        store = self.datastore
        store.create_keyspace()
        store.execute_ddl(
            f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{TABLE} ("
            "originator_id uuid, originator_version bigint, topic text, state text, write_id uuid, "
            "PRIMARY KEY ((originator_id), originator_version)"
            ") WITH CLUSTERING ORDER BY (originator_version ASC)"
        )
        if "write_id" not in store.columns_of(TABLE):  # a table made before it existed
            store.execute_ddl(f"ALTER TABLE {self.keyspace}.{TABLE} ADD write_id uuid")
        store.execute_ddl(
            f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{SNAPSHOTS_TABLE} ("
            "originator_id uuid PRIMARY KEY, originator_version bigint, topic text, state text, "
            "last_event text)"
        )
        if "last_event" not in store.columns_of(SNAPSHOTS_TABLE):  # made before snapshots
            # remembered their event: old rows keep null and are ignored until retaken
            store.execute_ddl(f"ALTER TABLE {self.keyspace}.{SNAPSHOTS_TABLE} ADD last_event text")
        store.execute_ddl(
            f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{HEARTBEAT_TABLE} "
            "(host text PRIMARY KEY, beats counter)"
        )

    def statements(self) -> _Statements:
        """Prepared once per process, on first use (the registry pings right after connecting)."""
        if self._statements is not None:
            return self._statements
        with self._prepare_lock:
            if self._statements is None:
                # The keyspace name was validated as an identifier by Settings; values are bound.
                table = f"{self.keyspace}.{TABLE}"
                insert = (
                    f"INSERT INTO {table} (originator_id, originator_version, topic, state, write_id) "  # noqa: S608
                    "VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
                )
                select = f"SELECT originator_version, topic, state FROM {table} WHERE originator_id = ?"  # noqa: S608
                after = f"{select} AND originator_version > ? LIMIT ?"
                prepare = self.datastore.prepare
                # reads may be sent to a second replica (speculative execution); a write never is
                self._statements = _Statements(
                    insert=prepare(insert),
                    select=prepare(select, idempotent=True),
                    select_after=prepare(after, idempotent=True),
                )
        return self._statements

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """A plain upsert (last write wins): a snapshot older than the one it overwrites only
        means more events to replay after it, never a wrong state."""
        self.check_process()
        save, _ = self._snapshot_statements()
        self._execute(save, tuple(snapshot))

    def latest_snapshot(self, originator_id: UUID) -> Snapshot | None:
        self.check_process()
        _, latest = self._snapshot_statements()
        rows = self._execute(latest, (originator_id,))
        if not rows:
            return None
        row = rows[0]
        return Snapshot(originator_id, row.originator_version, row.topic, row.state, row.last_event)

    def _snapshot_statements(self) -> tuple[PreparedStatement, PreparedStatement]:
        """Prepared apart from the events' statements, so a keyspace migrated before snapshots
        existed still stores events (and says to migrate when a snapshot is asked for)."""
        if self._snapshots is None:
            table = f"{self.keyspace}.{SNAPSHOTS_TABLE}"
            save = self.datastore.prepare(
                f"INSERT INTO {table} (originator_id, originator_version, topic, state, last_event) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?)"
            )
            latest = self.datastore.prepare(
                f"SELECT originator_version, topic, state, last_event FROM {table} WHERE originator_id = ?",  # noqa: S608
                idempotent=True,
            )
            self._snapshots = (save, latest)
        return self._snapshots

    def append(self, records: Sequence[StoredRecord]) -> None:  # no global feed: no position
        """Per aggregate, one conditional write (a batch for several events): all or nothing.

        Events of different aggregates saved together go in separate transactions, in order:
        Cassandra cannot make writes to several partitions atomic.
        """
        self.check_process()
        for originator_id, group in groupby(records, key=lambda r: r.originator_id):
            self._append_one_partition(originator_id, list(group))

    def _append_one_partition(self, originator_id: UUID, records: list[StoredRecord]) -> None:
        statement, write_id = self._conditional_write(records)
        stored = self.datastore.write_conditionally(
            statement, lambda result: _ours(result, write_id), f"a conditional write to {originator_id}"
        )
        if not stored:
            raise version_conflict(records)

    def _conditional_write(self, records: list[StoredRecord]) -> tuple[Any, UUID]:
        """One partition's rows, each ``IF NOT EXISTS`` and marked with a new write id: one
        statement, or a batch of them. The id tells this write's rows from anyone else's."""
        insert, write_id = self.statements().insert, uuid4()
        rows = [(r.originator_id, r.originator_version, r.topic, r.state, write_id) for r in records]
        if len({row[1] for row in rows}) != len(rows):
            # Conditions of one batch all see the state before it: duplicates would both "apply".
            raise ConcurrencyError(f"The batch for {rows[0][0]} repeats a version; nothing was stored.")
        return one_partition(insert, rows), write_id

    def _settle(self, statement: Any, write_id: UUID, originator_id: UUID, exc: Exception) -> bool:
        """A conditional write that got no answer (``exc``), settled as ``append`` settles it."""
        return self.datastore.settle_write(
            statement, lambda result: _ours(result, write_id), f"a conditional write to {originator_id}", exc
        )

    def select(
        self, originator_id: UUID, *, after_version: int = 0, limit: int | None = None
    ) -> list[StoredRecord]:
        self.check_process()
        if after_version or limit is not None:
            rows = self._execute(
                self.statements().select_after, (originator_id, after_version, limit or 2**31 - 1)
            )
        else:
            rows = self._read(originator_id)
        return [StoredRecord(originator_id, row.originator_version, row.topic, row.state) for row in rows]

    def _execute(self, statement: PreparedStatement, values: tuple[Any, ...]) -> list[Any]:
        return self.datastore.execute(statement, values)

    def _read(self, originator_id: UUID) -> list[Any]:
        return self._execute(self.statements().select, (originator_id,))

    def ping(self) -> None:
        self.check_process()
        self._read(uuid4())  # prepares the statements, then queries the table

    def check_ready(self) -> None:
        """Ping, then write this host's heartbeat at the configured consistency: a cluster that
        cannot reach a write quorum answers reads at ONE but is not ready."""
        self.ping()
        self.datastore.beat()

    def unavailable(self, error: object) -> StoreUnavailableError:
        """``QuorumLostError`` when too few replicas are alive, else unavailable (the datastore's)."""
        return self.datastore.unavailable(error)

    def _release(self) -> None:
        self.datastore.close()  # (in a forked child the base only forgets: the driver is the parent's)


def _ours(result: Any, write_id: UUID) -> bool:
    """Whether a conditional write's result means its rows are stored: applied now, or not applied
    because its versions already hold rows of this very write (sent before: by the driver, which
    sends a write again on another host when a connection breaks, or by ``settle``)."""
    return bool(result.was_applied) or any(getattr(row, "write_id", None) == write_id for row in result)
