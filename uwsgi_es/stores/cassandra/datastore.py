"""One process's Cassandra: the settings, the one cluster builder, prepared statements, conditional
writes settled by their write's own rows, and what the driver's errors mean. Held by our record
store (``stores.cassandra.store``) and by the eventsourcing library's recorders
(``integrations.eventsourcing.cassandra``), so both engines connect, write and fail the same way.

- **Settings**: one family, ``UWSGI_ES_CASSANDRA_*`` (``CassandraConfig.from_settings``). A library
  application may name them the library's way instead (``CASSANDRA_HOSTS``... each also under the
  application's name as a prefix): ``CassandraConfig.from_library_env`` reads those as aliases of
  ours, parsed and refused by the same declarations, naming the variable the user set.
- **The cluster** is built in the process that uses it, after the fork (a session inherited across
  fork times out): explicit protocol version, reactor, a DC-aware token-aware policy, a
  reconnection that finds a node again within seconds, and speculative execution for statements
  marked idempotent (reads, and the repeats of ``settle``). ``session()`` connects on first use;
  a datastore used in a forked child is refused (``runtime.fork``), and closing it there only
  forgets the parent's driver.
- **Conditional writes** (``write_conditionally``): a write that got no answer ("maybe applied": a
  timeout, a broken connection, Cassandra 5's "CAS operation result is unknown") is settled by
  sending it again; its result says stored (the rows in the way are this write's own: the caller's
  ``ours`` tells) or conflict. Only when no repeat gets an answer is the outcome unknown.
- **Errors**: every driver error becomes one of ours (``StoreUnavailableError``; ``QuorumLostError``
  when too few replicas are alive; ``SchemaMissingError`` for a table a statement cannot be
  prepared against; ``OutcomeUnknownError``), through ``error()``, which the library's datastore
  overrides to answer in the library's own exception types (ours kept as the cause).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, NoReturn

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
from cassandra.concurrent import execute_concurrent_with_args
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
    OutcomeUnknownError,
    QuorumLostError,
    SchemaMissingError,
    StoreUnavailableError,
    UwsgiEsError,
)
from uwsgi_es.runtime import fork
from uwsgi_es.settings import Settings, replication_map, setting_field
from uwsgi_es.stores.base import HEARTBEAT_TABLE, heartbeat_name

log = logging.getLogger("uwsgi_es.stores.cassandra")

# What the driver raises: its own exceptions, the server's error messages it has no class for and
# its connection errors (neither ErrorMessage nor ConnectionException is a DriverException), which
# would otherwise escape as a 500.
DRIVER_ERRORS = (NoHostAvailable, DriverException, ErrorMessage, ConnectionException)
CAS_WRITE_UNKNOWN = 0x1700  # protocol v5: "CAS operation result is unknown"
SETTLE_ATTEMPTS = 3  # times a write that got no answer is sent again before answering 504


@dataclass(frozen=True)
class CassandraConfig:
    """Where the cluster is and how to talk to it; field ``x`` is the setting ``cassandra_x``
    (``connect_timeout`` is the store-wide ``UWSGI_ES_CONNECT_TIMEOUT``)."""

    hosts: str
    port: int
    keyspace: str
    replication: str
    local_dc: str
    consistency: str
    serial_consistency: str
    protocol_version: int
    request_timeout: float
    speculative_delay: float
    reactor: str
    connect_timeout: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraConfig:
        values = {
            f.name: getattr(settings, f"cassandra_{f.name}")
            for f in fields(cls)
            if f.name != "connect_timeout"
        }
        return cls(**values, connect_timeout=settings.connect_timeout)

    @classmethod
    def from_library_env(cls, get: Callable[[str], str | None], settings: Settings) -> CassandraConfig:
        """The library's names as aliases of ours: ``CASSANDRA_<FIELD>`` (looked up by ``get``, the
        library's environment, which also tries the application's prefix) wins over the
        ``UWSGI_ES_CASSANDRA_<FIELD>`` setting; the keyspace defaults to the library module's
        ``eventsourcing``. A bad value raises ``ConfigurationError`` naming the alias."""
        config = cls.from_settings(settings)
        changed: dict[str, Any] = {}
        if not os.environ.get("UWSGI_ES_CASSANDRA_KEYSPACE"):
            changed["keyspace"] = "eventsourcing"
        for f in fields(cls):
            alias = f"CASSANDRA_{f.name.upper()}"
            raw = (get(alias) or "").strip()
            if raw:
                declared = "connect_timeout" if f.name == "connect_timeout" else f"cassandra_{f.name}"
                changed[f.name] = setting_field(declared).metadata["parser"](alias, raw)
        return cls(**{**config.__dict__, **changed})

    @property
    def host_list(self) -> list[str]:
        return [host.strip() for host in self.hosts.split(",") if host.strip()]

    @property
    def replication_map(self) -> dict[str, str]:
        """The keyspace's replication as CQL wants it, e.g. {'class': 'SimpleStrategy', ...}."""
        return replication_map("UWSGI_ES_CASSANDRA_REPLICATION", self.replication)

    def describe(self) -> str:
        return f"cassandra store at {self.hosts}:{self.port}/{self.keyspace}"


def build_cluster(config: CassandraConfig) -> Cluster:
    """The one cluster builder: every policy explicit, so the driver neither guesses nor warns."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[config.consistency],
        serial_consistency_level=ConsistencyLevel.name_to_value[config.serial_consistency],
        request_timeout=config.request_timeout,
        # A coordinator that stalls (a GC pause, a stopped process) would hold a read for the whole
        # request timeout: after the delay, the driver asks another replica as well. It applies to
        # statements marked idempotent only (reads, and settle's repeats).
        speculative_execution_policy=ConstantSpeculativeExecutionPolicy(
            config.speculative_delay, max_attempts=1
        )
        if config.speculative_delay
        else None,
    )
    return Cluster(
        config.host_list,
        port=config.port,
        protocol_version=config.protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connection_class=_connection_class(config.reactor),
        connect_timeout=config.connect_timeout,
        control_connection_timeout=config.connect_timeout,
        # After an outage, find the node again within seconds (the default waits up to 10 min).
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=2.0),
    )


def _connection_class(reactor: str) -> Any:
    if reactor == "asyncio":
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection
    from cassandra.io.libevreactor import LibevConnection  # bundled with the driver's wheels

    return LibevConnection


class CassandraDatastore:
    """One process's connection to the cluster (made on first use), its prepared statements and
    its errors. ``name`` says which store it is in messages; ``migrate`` is the command that
    creates its tables."""

    def __init__(
        self, config: CassandraConfig, *, name: str | None = None, migrate: str = "uwsgi-es migrate"
    ) -> None:
        self.config = config
        self.name = name or config.describe()
        self.migrate = migrate
        self.built_in_pid = os.getpid()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[tuple[str, bool], PreparedStatement] = {}
        self._lock = threading.Lock()

    # Connecting -----------------------------------------------------------------------------

    def session(self) -> Session:
        """This process's session, connecting on first use; refused in a forked child."""
        fork.refuse_if_forked(f"This {self.name}", self.built_in_pid)
        session = self._session
        if session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._connect()
                session = self._session
        return session

    @property
    def cluster(self) -> Cluster | None:
        return self._cluster

    def _connect(self) -> Session:
        config = self.config
        cluster = build_cluster(config)
        try:
            session = cluster.connect()
        except (*DRIVER_ERRORS, OSError) as exc:
            cluster.shutdown()
            self.fail(StoreUnavailableError(f"{self.name} is unavailable: {exc}"), exc)
        log.info(
            "process %d connected to Cassandra %s (protocol v%d, %s reactor, local DC %s)",
            os.getpid(),
            config.hosts,
            config.protocol_version,
            config.reactor,
            config.local_dc,
        )
        self._cluster = cluster
        return session

    def close(self) -> None:
        """Shut the driver down; in a forked child only forget it (its threads are the parent's)."""
        if fork.inherited(self.built_in_pid):
            return
        with self._lock:
            cluster, self._cluster, self._session = self._cluster, None, None
            self._prepared.clear()
        if cluster is not None:
            cluster.shutdown()

    # Statements -----------------------------------------------------------------------------

    def prepare(self, cql: str, *, serial: bool = False, idempotent: bool = False) -> PreparedStatement:
        """The statement, prepared once per process (``serial``: read at the serial consistency;
        ``idempotent``: may also be sent to a second replica). A statement that cannot be prepared
        against its table says how to create it."""
        key = (cql, serial)
        statement = self._prepared.get(key)
        if statement is None:
            try:
                statement = self.session().prepare(cql)
            except InvalidRequest as exc:
                self.fail(
                    SchemaMissingError(
                        f"A table is missing or older than this version in {self.name} ({exc}). "
                        f"Create or upgrade it once per deployment with: {self.migrate}"
                    ),
                    exc,
                )
            except DRIVER_ERRORS as exc:
                self.fail(self.unavailable(exc), exc)
            if serial:
                statement.consistency_level = ConsistencyLevel.name_to_value[self.config.serial_consistency]
            statement.is_idempotent = idempotent
            self._prepared[key] = statement
        return statement

    def execute(
        self, statement: Any, params: Sequence[Any] | None = None, *, serial: bool = False
    ) -> list[Any]:
        """The rows of a statement (CQL text is prepared first; ``serial``: read at the serial
        consistency); every driver error is ours."""
        if isinstance(statement, str):
            statement = self.prepare(statement, serial=serial)
        with self.errors():
            return list(self.session().execute(statement, params))

    def execute_many(self, cql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Idempotent writes, in parallel; any failure fails the call."""
        if not rows:
            return
        statement = self.prepare(cql)
        with self.errors():
            results = execute_concurrent_with_args(self.session(), statement, rows, concurrency=32)
        failures = [result for ok, result in results if not ok]
        if failures:
            self.fail(
                StoreUnavailableError(f"{self.name}: {len(failures)} writes failed: {failures[0]}"), None
            )

    def execute_ddl(self, cql: str) -> None:
        """A schema statement (not prepared), in the keyspace's own terms."""
        with self.errors():
            self.session().execute(cql)

    def create_keyspace(self) -> None:
        replication = ", ".join(f"'{k}': '{v}'" for k, v in self.config.replication_map.items())
        self.execute_ddl(
            f"CREATE KEYSPACE IF NOT EXISTS {self.config.keyspace} WITH replication = {{{replication}}}"
        )

    def columns_of(self, table: str) -> set[str]:
        """The columns a table of the keyspace has now (empty when it does not exist)."""
        with self.errors():
            rows = self.session().execute(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
                (self.config.keyspace, table),
            )
        return {row.column_name for row in rows}

    def beat(self, *, create: bool = False) -> None:
        """Write this host's heartbeat at the configured consistency (``/ready``): a counter in its
        own table, never on a partition written by lightweight transactions. ``create``: make the
        table first (migrate)."""
        table = f"{self.config.keyspace}.{HEARTBEAT_TABLE}"
        if create:
            self.execute_ddl(f"CREATE TABLE IF NOT EXISTS {table} (host text PRIMARY KEY, beats counter)")
        self.execute(f"UPDATE {table} SET beats = beats + 1 WHERE host = ?", (heartbeat_name(),))  # noqa: S608

    # Conditional writes ---------------------------------------------------------------------

    def write_conditionally(
        self,
        statement: Any,
        ours: Callable[[Any], bool],
        what: str,
        *,
        first: Callable[[Any], bool] | None = None,
    ) -> bool:
        """Send a conditional write; whether its rows are stored (``ours(result)``: applied now, or
        not applied because the rows in the way are this very write's). ``first`` reads the first
        answer instead, for rows that cannot tell a repeat of this write from another write of the
        same content (no write id): there only a repeat of our own may count them as ours. A
        write that got no answer is ``settle``d; one no repeat settles raises
        ``OutcomeUnknownError`` (504)."""
        try:
            return (first or ours)(self.session().execute(statement))
        except DRIVER_ERRORS as exc:
            if not maybe_applied(exc):
                self.fail(self.unavailable(exc), exc)  # refused, or never sent: nothing stored
            return self.settle_write(statement, ours, what, exc)

    def settle_write(self, statement: Any, ours: Callable[[Any], bool], what: str, exc: Exception) -> bool:
        """A conditional write that got no answer (``exc``): ``settle``d by sending it again, or
        ``OutcomeUnknownError`` when no repeat gets an answer."""
        outcome = settle(statement, lambda again: ours(self.session().execute(again)))
        if outcome is None:
            self.fail(
                OutcomeUnknownError(
                    f"{self.name}: {what} got no answer ({type(exc).__name__}: {exc}), and sending it "
                    f"again {SETTLE_ATTEMPTS} times did not settle it either; whether it was stored "
                    "is unknown."
                ),
                exc,
            )
        log.warning(
            "%s got no answer; sent again, it is %s",
            what,
            "stored" if outcome else "refused: another write holds its version",
        )
        return outcome

    def try_write(self, statement: Any) -> bool | None:
        """A conditional write's ``[applied]``, or None when it may have been applied but got no
        answer (the caller reads what happened); other errors are raised as ours."""
        try:
            return bool(self.session().execute(statement).was_applied)
        except DRIVER_ERRORS as exc:
            if maybe_applied(exc):
                return None
            self.fail(self.unavailable(exc), exc)

    # Errors ---------------------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """The driver's errors as ours (through ``error``)."""
        try:
            yield
        except UwsgiEsError:
            raise
        except (*DRIVER_ERRORS, OSError) as exc:
            self.fail(self.unavailable(exc), exc)

    def unavailable(self, error: object) -> StoreUnavailableError:
        """``QuorumLostError`` when the coordinator said too few replicas are alive (the driver
        gives its ``Unavailable`` itself, or inside ``NoHostAvailable``); else unavailable."""
        lost = next((e for e in _causes(error) if isinstance(e, Unavailable)), None)
        if lost is None:
            return StoreUnavailableError(f"{self.name} is unavailable: {' '.join(str(error).split())}")
        level = ConsistencyLevel.value_to_name.get(lost.consistency, lost.consistency)
        return QuorumLostError(
            f"{self.name}: {level} needs {lost.required_replicas} replicas alive and "
            f"{lost.alive_replicas} are; nothing was stored. It answers again once enough replicas are up."
        )

    def fail(self, ours: UwsgiEsError, cause: BaseException | None) -> NoReturn:
        """Raise ``error(ours)``, ``ours`` caused by the driver's ``cause``."""
        ours.__cause__ = cause
        raise self.error(ours)

    def error(self, ours: UwsgiEsError) -> Exception:
        """The exception raised for ``ours``: ours itself (the library's datastore answers in the
        library's exception types instead)."""
        return ours


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
