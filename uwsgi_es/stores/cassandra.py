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
- The ``Cluster``/``Session`` is created by ``from_settings`` in the process that uses it, after
  the fork (a session inherited across fork times out); statements are prepared once per
  process; reactor, protocol version and a DC-aware, token-aware load-balancing policy are set
  explicitly. ``close()`` shuts the cluster down, except in a forked child, where it only forgets.
- Cassandra keeps no global order of events, so this store is no ``GlobalFeed``: applications on
  it have no ``/events`` feed, and the read side refuses to start a runner on it.
- ``/ready`` writes a counter in ``uwsgi_es_heartbeat`` (its own table: counters never share a
  partition with the events' lightweight transactions) at the configured consistency.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any
from uuid import UUID, uuid4

from cassandra import (
    ConsistencyLevel,
    DriverException,
    InvalidRequest,
    OperationTimedOut,
    Unavailable,
    WriteFailure,
    WriteTimeout,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.connection import ConnectionException
from cassandra.policies import (
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.protocol import ErrorMessage
from cassandra.query import BatchStatement, PreparedStatement

from uwsgi_es.errors import (
    ConcurrencyError,
    OutcomeUnknownError,
    QuorumLostError,
    SchemaMissingError,
    StoreUnavailableError,
)
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import (
    HEARTBEAT_TABLE,
    SNAPSHOTS_TABLE,
    RecordStore,
    Snapshot,
    StoredRecord,
    heartbeat_name,
    version_conflict,
)

log = logging.getLogger(__name__)

# What the driver raises: its own exceptions, the server's error messages it has no class for and
# its connection errors (neither ErrorMessage nor ConnectionException is a DriverException), which
# would otherwise escape as a 500.
DRIVER_ERRORS = (NoHostAvailable, DriverException, ErrorMessage, ConnectionException)
CAS_WRITE_UNKNOWN = 0x1700  # protocol v5: "CAS operation result is unknown"
SETTLE_ATTEMPTS = 3  # times a write that got no answer is sent again before answering 504
TABLE = "integer_sequenced_items"


def _connection_class(reactor: str) -> Any:
    if reactor == "asyncio":
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection
    from cassandra.io.libevreactor import LibevConnection  # bundled with the driver's wheels

    return LibevConnection


@dataclass(frozen=True)
class _Statements:
    insert: PreparedStatement
    select: PreparedStatement
    select_after: PreparedStatement
    heartbeat: PreparedStatement


class CassandraRecordStore(RecordStore):
    """Records in ``<keyspace>.integer_sequenced_items`` on a Cassandra cluster."""

    def __init__(self, cluster: Cluster, session: Session, settings: Settings) -> None:
        super().__init__()
        self.cluster = cluster
        self.session = session
        self.settings = settings
        self.keyspace = settings.cassandra_keyspace
        self._statements: _Statements | None = None
        self._snapshots: tuple[PreparedStatement, PreparedStatement] | None = None
        self._prepare_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraRecordStore:
        """Connect (in this process, after the fork). Statements are prepared at the first ping."""
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc)
            ),
            consistency_level=ConsistencyLevel.name_to_value[settings.cassandra_consistency],
            serial_consistency_level=ConsistencyLevel.name_to_value[settings.cassandra_serial_consistency],
            request_timeout=settings.cassandra_request_timeout,
            # A coordinator that stalls (a GC pause, a stopped process) would hold a read for the
            # whole request timeout: after the delay, the driver asks another replica as well.
            # It applies to statements marked idempotent only (our reads, and settle's repeats).
            speculative_execution_policy=ConstantSpeculativeExecutionPolicy(
                settings.cassandra_speculative_delay, max_attempts=1
            )
            if settings.cassandra_speculative_delay
            else None,
        )
        cluster = Cluster(
            settings.cassandra_host_list,
            port=settings.cassandra_port,
            protocol_version=settings.cassandra_protocol_version,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connection_class=_connection_class(settings.cassandra_reactor),
            connect_timeout=settings.connect_timeout,
            control_connection_timeout=settings.connect_timeout,
            # After an outage, find the node again within seconds (the default waits up to 10 min).
            reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=2.0),
        )
        try:
            session = cluster.connect()
        except (*DRIVER_ERRORS, OSError) as exc:
            cluster.shutdown()
            raise StoreUnavailableError(f"{settings.describe_store()} is unavailable: {exc}") from exc
        log.info(
            "process %d connected to Cassandra %s (protocol v%d, %s reactor, local DC %s)",
            os.getpid(),
            settings.cassandra_hosts,
            settings.cassandra_protocol_version,
            settings.cassandra_reactor,
            settings.cassandra_local_dc,
        )
        return cls(cluster, session, settings)

    def describe(self) -> str:
        return self.settings.describe_store()

    def create_schema(self) -> None:
        replication = ", ".join(f"'{k}': '{v}'" for k, v in self.settings.cassandra_replication_map.items())
        try:
            self.session.execute(
                f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {{{replication}}}"
            )
            self.session.execute(
                f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{TABLE} ("
                "originator_id uuid, originator_version bigint, topic text, state text, write_id uuid, "
                "PRIMARY KEY ((originator_id), originator_version)"
                ") WITH CLUSTERING ORDER BY (originator_version ASC)"
            )
            columns = self.session.execute(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
                (self.keyspace, TABLE),
            )
            if "write_id" not in {row.column_name for row in columns}:  # a table made before it existed
                self.session.execute(f"ALTER TABLE {self.keyspace}.{TABLE} ADD write_id uuid")
            self.session.execute(
                f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{SNAPSHOTS_TABLE} ("
                "originator_id uuid PRIMARY KEY, originator_version bigint, topic text, state text, "
                "last_event text)"
            )
            columns = self.session.execute(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
                (self.keyspace, SNAPSHOTS_TABLE),
            )
            if "last_event" not in {row.column_name for row in columns}:  # made before snapshots
                # remembered their event: old rows keep null and are ignored until retaken
                self.session.execute(f"ALTER TABLE {self.keyspace}.{SNAPSHOTS_TABLE} ADD last_event text")
            self.session.execute(
                f"CREATE TABLE IF NOT EXISTS {self.keyspace}.{HEARTBEAT_TABLE} "
                "(host text PRIMARY KEY, beats counter)"
            )
        except DriverException as exc:
            raise StoreUnavailableError(f"{self.describe()}: creating the schema failed: {exc}") from exc

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
                heartbeat = f"UPDATE {self.keyspace}.{HEARTBEAT_TABLE} SET beats = beats + 1 WHERE host = ?"  # noqa: S608
                after = f"{select} AND originator_version > ? LIMIT ?"
                prepared = self._prepare(table, insert, select, after, heartbeat)
                for read in prepared[1:3]:
                    read.is_idempotent = True  # may be sent to a second replica (speculative execution)
                self._statements = _Statements(
                    insert=prepared[0], select=prepared[1], select_after=prepared[2], heartbeat=prepared[3]
                )
        return self._statements

    def _prepare(self, table: str, *statements: str) -> list[PreparedStatement]:
        """The statements prepared; ``SchemaMissingError`` naming migrate if ``table`` is missing."""
        try:
            return [self.session.prepare(statement) for statement in statements]
        except InvalidRequest as exc:
            raise SchemaMissingError(
                f"The table {table} is missing or older than this version in {self.describe()} ({exc}). "
                "Create or upgrade it once per deployment with: UWSGI_ES_STORE=cassandra uwsgi-es migrate"
            ) from exc
        except DRIVER_ERRORS as exc:
            raise self.unavailable(exc) from exc

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
            save, latest = self._prepare(
                table,
                f"INSERT INTO {table} (originator_id, originator_version, topic, state, last_event) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?)",
                f"SELECT originator_version, topic, state, last_event FROM {table} WHERE originator_id = ?",  # noqa: S608
            )
            latest.is_idempotent = True
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
        try:
            stored = _ours(self.session.execute(statement), write_id)
        except DRIVER_ERRORS as exc:
            if not maybe_applied(exc):
                raise self.unavailable(exc) from exc  # refused, or never sent: nothing stored
            stored = self._settle(statement, write_id, originator_id, exc)
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
        """A conditional write that got no answer: ``settle`` it, or 504's error."""
        outcome = settle(statement, lambda again: _ours(self.session.execute(again), write_id))
        if outcome is None:
            raise OutcomeUnknownError(
                f"{self.describe()}: a conditional write to {originator_id} got no answer "
                f"({type(exc).__name__}: {exc}), and sending it again {SETTLE_ATTEMPTS} times did not "
                "settle it either; whether it was stored is unknown."
            ) from exc
        log.warning(
            "a conditional write to %s got no answer; sent again, it is %s",
            originator_id,
            "stored" if outcome else "refused: another write holds its version",
        )
        return outcome

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
        try:
            return list(self.session.execute(statement, values))
        except DRIVER_ERRORS as exc:
            raise self.unavailable(exc) from exc

    def _read(self, originator_id: UUID) -> list[Any]:
        return self._execute(self.statements().select, (originator_id,))

    def ping(self) -> None:
        self.check_process()
        self._read(uuid4())  # prepares the statements, then queries the table

    def check_ready(self) -> None:
        """Ping, then write this host's heartbeat at the configured consistency: a cluster that
        cannot reach a write quorum answers reads at ONE but is not ready."""
        self.ping()
        self._execute(self.statements().heartbeat, (heartbeat_name(),))

    def unavailable(self, error: object) -> StoreUnavailableError:
        """``QuorumLostError`` when the coordinator said too few replicas are alive (the driver
        gives its ``Unavailable`` itself, or inside ``NoHostAvailable``); else the base's."""
        lost = next((e for e in _causes(error) if isinstance(e, Unavailable)), None)
        if lost is None:
            return super().unavailable(error)
        level = ConsistencyLevel.value_to_name.get(lost.consistency, lost.consistency)
        return QuorumLostError(
            f"{self.describe()}: {level} needs {lost.required_replicas} replicas alive and "
            f"{lost.alive_replicas} are; nothing was stored. It answers again once enough replicas are up."
        )

    def _release(self) -> None:
        self.cluster.shutdown()  # (in a forked child the base only forgets: the driver is the parent's)


def _causes(error: object) -> list[object]:
    """The error, and the per-host errors NoHostAvailable carries."""
    causes = getattr(error, "errors", None)
    return [error, *(causes.values() if isinstance(causes, dict) else [])]


def _contended(error: BaseException) -> bool:
    """Cassandra 5's "CAS operation result is unknown": a proposal accepted by fewer than a quorum."""
    return any(
        isinstance(e, ErrorMessage) and getattr(e, "code", None) == CAS_WRITE_UNKNOWN for e in _causes(error)
    )


def maybe_applied(error: BaseException) -> bool:
    """Whether a failed write may have been applied: a timeout (the server's WriteTimeout, or the
    driver's OperationTimedOut after sending), a write failure, a connection that broke (perhaps
    after sending), or Cassandra 5's "CAS operation result is unknown" (a Paxos proposal accepted
    by fewer than a quorum, which the driver passes on as a bare error message), alone or among
    NoHostAvailable's causes. A refusal (Unavailable: too few replicas) stored nothing."""
    return _contended(error) or any(
        isinstance(e, WriteTimeout | OperationTimedOut | WriteFailure | ConnectionException)
        for e in _causes(error)
    )


def one_partition(insert: PreparedStatement, rows: Sequence[Sequence[Any]]) -> Any:
    """``insert`` bound to one row, or a batch of it for several: one partition's conditional
    write (all or nothing, as a batch inside one partition is)."""
    if len(rows) == 1:
        return insert.bind(rows[0])
    batch = BatchStatement()
    for row in rows:
        batch.add(insert, row)
    return batch


def _ours(result: Any, write_id: UUID) -> bool:
    """Whether a conditional write's result means its rows are stored: applied now, or not applied
    because its versions already hold rows of this very write (sent before: by the driver, which
    sends a write again on another host when a connection breaks, or by ``settle``)."""
    return bool(result.was_applied) or any(getattr(row, "write_id", None) == write_id for row in result)


def settle(statement: Any, send: Callable[[Any], bool]) -> bool | None:
    """Whether a conditional write that got no answer is stored: True (its rows hold its versions),
    False (another write's do: a conflict), None (unknown: no repeat got an answer).

    The same write is sent again, up to ``SETTLE_ATTEMPTS`` times, and ``send`` reads its result.
    Looking instead (a SERIAL read) would not settle it: a proposal our first round left accepted on
    one replica (a coordinator stopped mid-round) can be completed by a later round after a read saw
    nothing; once the versions hold rows, such a proposal has nothing left to change. The repeat is
    marked idempotent (it is: whatever happens, ``send`` tells) so that a stalled coordinator gets
    a speculative second one.
    """
    statement.is_idempotent = True
    for _ in range(SETTLE_ATTEMPTS):
        try:
            return send(statement)
        except DRIVER_ERRORS:
            continue
    return None
