"""Configuration, read from ``UWSGI_ES_*`` environment variables when an application is built.

Nothing reads the environment at import time: ``Settings.from_environ()`` is called by the registry
in each worker, so tests pass a plain dict and a worker sees the environment uWSGI gave it. Every
value is parsed and checked here; a bad one raises ``ConfigurationError`` naming the variable, the
value and what is accepted. Unknown ``UWSGI_ES_*`` names are refused too, because a misspelt
variable that is silently ignored is the hardest configuration bug to find.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar, get_args

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from uwsgi_es.errors import ConfigurationError

PREFIX = "UWSGI_ES_"
StoreKind = Literal["sqlalchemy", "cassandra", "django"]
Reactor = Literal["libev", "asyncio"]
CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")
SERIAL_CONSISTENCY_LEVELS = ("SERIAL", "LOCAL_SERIAL")
DEFAULT_DATABASE_URL = "sqlite:///var/uwsgi_es.sqlite3"

# Read by uwsgi.ini and the test harness, not by Python code; listed so they are not "unknown".
OTHER_KNOWN_VARIABLES = frozenset({"UWSGI_ES_HTTP"})

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Everything an application needs to start, already validated.

    Field ``x`` is read from ``UWSGI_ES_X``; the defaults suit the SQLite quick start.
    """

    store: StoreKind = "sqlalchemy"
    database_url: str = DEFAULT_DATABASE_URL
    application: str = "uwsgi_es.bank:BankAccounts"
    sqlite_busy_timeout_ms: int = 5000
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 10.0
    pool_recycle: int = 1800
    pool_pre_ping: bool = True
    connect_timeout: int = 5
    conflict_retries: int = 10
    max_body_bytes: int = 65536
    init_retry_seconds: float = 1.0
    init_retry_max_seconds: float = 30.0
    fail_fast: bool = False
    gc_freeze: bool = True
    cassandra_hosts: str = "127.0.0.1"
    cassandra_port: int = 9042
    cassandra_keyspace: str = "uwsgi_es"
    cassandra_replication: str = "SimpleStrategy:1"
    cassandra_local_dc: str = "datacenter1"
    cassandra_consistency: str = "LOCAL_QUORUM"
    cassandra_serial_consistency: str = "LOCAL_SERIAL"
    cassandra_protocol_version: int = 5
    cassandra_request_timeout: float = 10.0
    cassandra_reactor: Reactor = "libev"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``UWSGI_ES_*`` variable of ``environ`` (default: os.environ)."""
        env = os.environ if environ is None else environ
        known = {PREFIX + f.name.upper() for f in fields(cls)} | OTHER_KNOWN_VARIABLES
        for name in env:
            if name.startswith(PREFIX) and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" Did you mean {close[0]}?" if close else ""
                raise ConfigurationError(
                    f"Unknown setting {name}.{hint} Known settings: {', '.join(sorted(known))}."
                )
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            parser = _PARSERS[f.name]
            values[f.name] = parser(name, raw.strip())
        settings = cls(**values)
        settings._check_relations()
        return settings

    def _check_relations(self) -> None:
        if self.init_retry_max_seconds < self.init_retry_seconds:
            raise ConfigurationError(
                f"UWSGI_ES_INIT_RETRY_MAX_SECONDS ({self.init_retry_max_seconds}) is smaller than "
                f"UWSGI_ES_INIT_RETRY_SECONDS ({self.init_retry_seconds}); make it at least as large."
            )

    @property
    def is_sqlite(self) -> bool:
        return self.store == "sqlalchemy" and make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def is_sqlite_memory(self) -> bool:
        url = make_url(self.database_url)
        return self.is_sqlite and url.database in (None, "", ":memory:")

    @property
    def cassandra_host_list(self) -> list[str]:
        return [host.strip() for host in self.cassandra_hosts.split(",") if host.strip()]

    @property
    def cassandra_replication_map(self) -> dict[str, str]:
        """The keyspace's replication as CQL wants it, e.g. {'class': 'SimpleStrategy', ...}."""
        return _replication("UWSGI_ES_CASSANDRA_REPLICATION", self.cassandra_replication)

    def describe_store(self) -> str:
        """The store and database, with any password hidden: safe for logs and error messages."""
        if self.store == "django":
            return "django store on the project's default database"
        if self.store == "cassandra":
            return (
                f"cassandra store at {self.cassandra_hosts}:{self.cassandra_port}/{self.cassandra_keyspace}"
            )
        return f"{self.store} store at {make_url(self.database_url).render_as_string()}"


def _integer(minimum: int, maximum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not a whole number.") from None
        if not minimum <= value <= maximum:
            raise ConfigurationError(f"{name}={value} is out of range: use {minimum} to {maximum}.")
        return value

    return parse


def _number(minimum: float, maximum: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not a number of seconds.") from None
        if not minimum <= value <= maximum:
            raise ConfigurationError(f"{name}={value} is out of range: use {minimum} to {maximum}.")
        return value

    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = {"0", "false", "no", "off"}


def boolean_setting(settings: Settings | None, name: str) -> bool:
    """One boolean setting, read on its own when ``settings`` could not be (another is invalid).

    An unreadable value counts as the default here; the build reports it, naming the variable.
    """
    if settings is not None:
        return bool(getattr(settings, name))
    variable = PREFIX + name.upper()
    raw = os.environ.get(variable, "").strip()
    try:
        return _boolean(variable, raw) if raw else bool(getattr(Settings, name))
    except ConfigurationError:
        return bool(getattr(Settings, name))


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off.")


def _one_of(accepted: tuple[str, ...], what: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.upper() if accepted[0].isupper() else raw.lower()
        if value not in accepted:
            raise ConfigurationError(
                f"{name}={raw!r} is not a known {what}: use one of {', '.join(accepted)}."
            )
        return value

    return parse


def _hosts(name: str, raw: str) -> str:
    hosts = [host.strip() for host in raw.split(",")]
    if not all(hosts) or any(" " in host for host in hosts):
        raise ConfigurationError(f"{name}={raw!r} must be host names or addresses separated by commas.")
    return ",".join(hosts)


def _identifier(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", raw):
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid keyspace name: a letter, then letters, digits or _ (48 at most)."
        )
    return raw


def _replication(name: str, raw: str) -> dict[str, str]:
    strategy, _, spec = raw.partition(":")
    if strategy == "SimpleStrategy" and spec.isdigit() and int(spec) > 0:
        return {"class": "SimpleStrategy", "replication_factor": spec}
    if strategy == "NetworkTopologyStrategy" and spec:
        pairs = [pair.partition("=") for pair in spec.split(",")]
        if all(dc and sep and factor.isdigit() for dc, sep, factor in pairs):
            return {"class": "NetworkTopologyStrategy", **{dc: factor for dc, _, factor in pairs}}
    raise ConfigurationError(
        f"{name}={raw!r} is not a replication: use 'SimpleStrategy:<factor>' (one data centre) or "
        "'NetworkTopologyStrategy:<dc>=<factor>,<dc>=<factor>'."
    )


def _checked_replication(name: str, raw: str) -> str:
    _replication(name, raw)
    return raw


def _database_url(name: str, raw: str) -> str:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigurationError(
            f"{name} is not a SQLAlchemy database URL (got {raw!r}); expected e.g. "
            "'sqlite:///var/app.sqlite3' or 'postgresql+psycopg://user:password@host:5432/dbname'."
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"{name} names the {url.get_backend_name()!r} backend; uwsgi_es supports sqlite and postgresql."
        )
    return raw


def _import_string(name: str, raw: str) -> str:
    module, _, attribute = raw.partition(":")
    if not module or not attribute:
        raise ConfigurationError(f'{name}={raw!r} must be in the form "package.module:ApplicationClass".')
    return raw


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "store": _one_of(get_args(StoreKind), "store"),
    "database_url": _database_url,
    "application": _import_string,
    "sqlite_busy_timeout_ms": _integer(0, 600_000),
    "pool_size": _integer(1, 1000),
    "max_overflow": _integer(0, 1000),
    "pool_timeout": _number(0.1, 600.0),
    "pool_recycle": _integer(-1, 86_400),
    "pool_pre_ping": _boolean,
    "connect_timeout": _integer(1, 600),
    "conflict_retries": _integer(0, 100),
    "max_body_bytes": _integer(64, 64 * 1024 * 1024),
    "init_retry_seconds": _number(0.01, 3600.0),
    "init_retry_max_seconds": _number(0.01, 3600.0),
    "fail_fast": _boolean,
    "gc_freeze": _boolean,
    "cassandra_hosts": _hosts,
    "cassandra_port": _integer(1, 65535),
    "cassandra_keyspace": _identifier,
    "cassandra_replication": _checked_replication,
    "cassandra_local_dc": lambda name, raw: raw,
    "cassandra_consistency": _one_of(CONSISTENCY_LEVELS, "consistency level"),
    "cassandra_serial_consistency": _one_of(SERIAL_CONSISTENCY_LEVELS, "serial consistency level"),
    "cassandra_protocol_version": _integer(3, 5),
    "cassandra_request_timeout": _number(0.1, 600.0),
    "cassandra_reactor": _one_of(get_args(Reactor), "reactor"),
}
