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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar, get_args

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from uwsgi_es.errors import ConfigurationError

PREFIX = "UWSGI_ES_"
StoreKind = Literal["sqlalchemy"]
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
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def is_sqlite_memory(self) -> bool:
        url = make_url(self.database_url)
        return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")

    def describe_store(self) -> str:
        """The store and database, with any password hidden: safe for logs and error messages."""
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


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off.")


def _store(name: str, raw: str) -> StoreKind:
    accepted: tuple[str, ...] = get_args(StoreKind)
    if raw not in accepted:
        raise ConfigurationError(f"{name}={raw!r} is not a known store: use one of {', '.join(accepted)}.")
    return "sqlalchemy"


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
    "store": _store,
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
}
