"""The Cassandra session of one process, and what the driver's errors mean to the library.

The ``Cluster``/``Session`` is created on first use, in the process that uses it: constructing the
factory (and so the application) connects to nothing, so a worker builds its own after the fork,
and a datastore inherited across fork is refused instead of sharing the parent's driver threads
and sockets. Statements are prepared once per process. Reactor, protocol version and a DC-aware,
token-aware load-balancing policy are explicit, as in uwsgi_es's own Cassandra store.

Configuration, the library's way (each key also under the application's name as a prefix):
``CASSANDRA_HOSTS`` (comma-separated, default 127.0.0.1), ``CASSANDRA_PORT`` (9042),
``CASSANDRA_KEYSPACE`` (eventsourcing), ``CASSANDRA_REPLICATION`` (SimpleStrategy:1, or
NetworkTopologyStrategy:dc1=3,dc2=3), ``CASSANDRA_LOCAL_DC`` (datacenter1),
``CASSANDRA_CONSISTENCY`` (LOCAL_QUORUM), ``CASSANDRA_SERIAL_CONSISTENCY`` (LOCAL_SERIAL),
``CASSANDRA_PROTOCOL_VERSION`` (5), ``CASSANDRA_REQUEST_TIMEOUT`` and ``CASSANDRA_CONNECT_TIMEOUT``
(seconds). A bad value raises ``OSError`` naming the key, as the library's own modules do.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement
from eventsourcing.persistence import OperationalError, PersistenceError, ProgrammingError
from eventsourcing.utils import Environment

from uwsgi_es.runtime import fork
from uwsgi_es.stores.cassandra import DRIVER_ERRORS, maybe_applied

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


@dataclass(frozen=True)
class CassandraConfig:
    hosts: tuple[str, ...]
    port: int
    keyspace: str
    replication: dict[str, str]
    local_dc: str
    consistency: int
    serial_consistency: int
    protocol_version: int
    request_timeout: float
    connect_timeout: float

    @classmethod
    def from_env(cls, env: Environment) -> CassandraConfig:
        def text(key: str, default: str) -> str:
            return str(env.get(key) or default).strip()

        def number(key: str, default: str, kind: type[int] | type[float]) -> Any:
            raw = text(key, default)
            try:
                return kind(raw)
            except ValueError:
                raise OSError(
                    f"Cassandra environment value for key '{key}' is not a number: {raw!r}"
                ) from None

        keyspace = text("CASSANDRA_KEYSPACE", "eventsourcing")
        if not _IDENTIFIER.fullmatch(keyspace):
            raise OSError(
                f"CASSANDRA_KEYSPACE {keyspace!r} is not a keyspace name (a letter, letters, digits, _)"
            )
        levels = ConsistencyLevel.name_to_value
        consistency = text("CASSANDRA_CONSISTENCY", "LOCAL_QUORUM").upper()
        serial = text("CASSANDRA_SERIAL_CONSISTENCY", "LOCAL_SERIAL").upper()
        if consistency not in levels or serial not in ("SERIAL", "LOCAL_SERIAL"):
            raise OSError(
                f"CASSANDRA_CONSISTENCY {consistency!r} / CASSANDRA_SERIAL_CONSISTENCY {serial!r}: use "
                "e.g. LOCAL_QUORUM and LOCAL_SERIAL"
            )
        return cls(
            hosts=tuple(h.strip() for h in text("CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip()),
            port=number("CASSANDRA_PORT", "9042", int),
            keyspace=keyspace,
            replication=_replication(text("CASSANDRA_REPLICATION", "SimpleStrategy:1")),
            local_dc=text("CASSANDRA_LOCAL_DC", "datacenter1"),
            consistency=levels[consistency],
            serial_consistency=levels[serial],
            protocol_version=number("CASSANDRA_PROTOCOL_VERSION", "5", int),
            request_timeout=number("CASSANDRA_REQUEST_TIMEOUT", "10", float),
            connect_timeout=number("CASSANDRA_CONNECT_TIMEOUT", "5", float),
        )

    def describe(self) -> str:
        return f"Cassandra at {','.join(self.hosts)}:{self.port}/{self.keyspace}"


def _replication(raw: str) -> dict[str, str]:
    strategy, _, spec = raw.partition(":")
    if strategy == "SimpleStrategy" and spec.isdigit():
        return {"class": "SimpleStrategy", "replication_factor": spec}
    if strategy == "NetworkTopologyStrategy" and spec:
        pairs = [pair.partition("=") for pair in spec.split(",")]
        if all(dc and sep and factor.isdigit() for dc, sep, factor in pairs):
            return {"class": "NetworkTopologyStrategy", **{dc: factor for dc, _, factor in pairs}}
    raise OSError(
        f"CASSANDRA_REPLICATION {raw!r}: use 'SimpleStrategy:<factor>' or "
        "'NetworkTopologyStrategy:<dc>=<factor>,...'"
    )


class CassandraDatastore:
    """One process's connection to the cluster, made on first use."""

    def __init__(self, config: CassandraConfig) -> None:
        self.config = config
        self.built_in_pid = os.getpid()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[tuple[str, bool], PreparedStatement] = {}
        self._lock = threading.Lock()

    def session(self) -> Session:
        fork.refuse_if_forked("This Cassandra session", self.built_in_pid)
        session = self._session
        if session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._connect()
                session = self._session
        return session

    def _connect(self) -> Session:
        config = self.config
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
            consistency_level=config.consistency,
            serial_consistency_level=config.serial_consistency,
            request_timeout=config.request_timeout,
        )
        from cassandra.io.libevreactor import LibevConnection

        cluster = Cluster(
            list(config.hosts),
            port=config.port,
            protocol_version=config.protocol_version,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connection_class=LibevConnection,
            connect_timeout=config.connect_timeout,
            control_connection_timeout=config.connect_timeout,
            reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=2.0),
        )
        try:
            session = cluster.connect()
        except (*DRIVER_ERRORS, OSError) as exc:
            cluster.shutdown()
            raise OperationalError(f"{config.describe()} is unavailable: {exc}") from exc
        self._cluster = cluster
        return session

    def prepare(self, cql: str, *, serial: bool = False) -> PreparedStatement:
        """The statement, prepared once per process (``serial``: read at the serial consistency)."""
        key = (cql, serial)
        statement = self._prepared.get(key)
        if statement is None:
            with self.errors():
                statement = self.session().prepare(cql)
            if serial:
                statement.consistency_level = self.config.serial_consistency
            self._prepared[key] = statement
        return statement

    def execute(self, cql: str, params: Sequence[Any] = (), *, serial: bool = False) -> list[Any]:
        statement = self.prepare(cql, serial=serial)
        with self.errors():
            return list(self.session().execute(statement, params))

    def execute_raw(self, statement: Any) -> Any:
        """A statement or batch the caller built; an error after which the write may have been
        applied (a timeout, "CAS operation result is unknown") passes through for it to resolve."""
        with self.errors(resolvable=True):
            return self.session().execute(statement)

    def execute_many(self, cql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Idempotent writes, in parallel; any failure fails the call."""
        if not rows:
            return
        statement = self.prepare(cql)
        with self.errors():
            results = execute_concurrent_with_args(self.session(), statement, rows, concurrency=32)
        failures = [result for ok, result in results if not ok]
        if failures:
            raise OperationalError(f"{self.config.describe()}: {len(failures)} writes failed: {failures[0]}")

    @contextmanager
    def errors(self, *, resolvable: bool = False) -> Iterator[None]:
        """The driver's errors as the library's; with ``resolvable``, the ones after which a
        conditional write may have been applied pass through unchanged (``maybe_applied``)."""
        try:
            yield
        except InvalidRequest as exc:
            raise ProgrammingError(f"{self.config.describe()}: {exc}") from exc
        except PersistenceError:
            raise
        except (*DRIVER_ERRORS, OSError) as exc:
            if resolvable and maybe_applied(exc):
                raise
            raise OperationalError(f"{self.config.describe()} is unavailable: {exc}") from exc

    def create_keyspace(self) -> None:
        replication = ", ".join(f"'{k}': '{v}'" for k, v in self.config.replication.items())
        with self.errors():
            self.session().execute(
                f"CREATE KEYSPACE IF NOT EXISTS {self.config.keyspace} WITH replication = {{{replication}}}"
            )

    def create_table(self, ddl: str) -> None:
        self.create_keyspace()
        with self.errors():
            self.session().execute(ddl)

    def close(self) -> None:
        if fork.inherited(self.built_in_pid):
            return  # inherited across fork: the driver's threads and sockets are the parent's
        with self._lock:
            cluster, self._cluster, self._session = self._cluster, None, None
            self._prepared.clear()
        if cluster is not None:
            cluster.shutdown()
