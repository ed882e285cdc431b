"""Hosting an application of the eventsourcing library in a worker: build it after the fork without
creating tables, say whether it can serve, describe it without secrets, and close it, but never
the connections of the process it was inherited from.

The library builds its infrastructure when the application is constructed (``Application.__init__``
calls ``InfrastructureFactory.construct``), reads its own environment (``PERSISTENCE_MODULE``,
``SQLITE_DBNAME``, ``POSTGRES_*``..., each also under the application's name as a prefix), and,
unless told otherwise, creates its tables there too. Built in each worker after the fork, with
``CREATE_TABLE`` off (``uwsgi-es migrate`` creates them, once), it is safe under a pre-forking
server. What a worker inherited from a master that built one anyway is kept alive, untouched:
closing it, or letting it be garbage-collected, would end the master's PostgreSQL sessions over
the sockets both processes hold (psycopg says goodbye on the socket when a connection is finalised).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsourcing.application import Application as LibraryApplication
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    InfrastructureFactoryError,
    PersistenceError,
)
from eventsourcing.utils import Environment, strtobool

from uwsgi_es.errors import (
    ConfigurationError,
    SchemaMissingError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from uwsgi_es.integrations.eventsourcing.commands import counts
from uwsgi_es.redaction import redact_url, scrub
from uwsgi_es.runtime import fork
from uwsgi_es.stores.base import require_room_for_the_log

# What each persistence module reads that may be a secret (never shown, scrubbed from messages).
_SECRET_KEYS = ("POSTGRES_PASSWORD", "SQLALCHEMY_URL", "CIPHER_KEY", "CASSANDRA_PASSWORD")
# SQLite checkpoints its write-ahead log at 1000 pages (4 MiB): below that much free space, writes fail.

_lock = threading.Lock()
_constructions: dict[int, int] = {}
# Applications inherited across fork: kept referenced so they are never finalised in the child.
_inherited: list[Any] = []


def environment(cls: type[LibraryApplication[Any]], overrides: dict[str, str] | None = None) -> Environment:
    """The environment the library gives ``cls`` (its class ``env``, the process's, prefixed by
    the application's name), plus ``overrides`` for both the plain and the prefixed keys."""
    values: dict[str, str] = dict(cls.env)
    if cls.is_snapshotting_enabled or cls.snapshotting_intervals:
        values["IS_SNAPSHOTTING_ENABLED"] = "y"
    values.update(os.environ)
    for key, value in (overrides or {}).items():
        values[key] = value
        values[f"{cls.name.upper()}_{key}"] = value
    return Environment(cls.name, values)


def validate(cls: type[LibraryApplication[Any]]) -> None:
    """Check, connecting to nothing, that the library can build ``cls`` from this environment:
    its persistence module resolves and finds every setting it needs. (Run in the uWSGI master.)"""
    try:
        factory = InfrastructureFactory.construct(environment(cls, {"CREATE_TABLE": "n"}))
    except (InfrastructureFactoryError, OSError, ValueError, ImportError) as exc:
        raise ConfigurationError(_explain(cls, exc)) from None
    factory.close()  # built only to check the settings: its pools were never opened


def construct(cls: type[LibraryApplication[Any]], overrides: dict[str, str] | None = None) -> Any:
    """Build ``cls`` in this process, its tables left to ``uwsgi-es migrate``."""
    try:
        app = cls(env=environment(cls, {"CREATE_TABLE": "n", **(overrides or {})}))
    except (InfrastructureFactoryError, OSError, ValueError, ImportError) as exc:
        raise ConfigurationError(_explain(cls, exc)) from exc
    except PersistenceError as exc:
        raise _translate(exc, f"{cls.name}'s store", _secrets(environment(cls))) from exc
    with _lock:
        _constructions[os.getpid()] = _constructions.get(os.getpid(), 0) + 1
    return app


def constructions_in_this_process() -> int:
    """How many library applications the registry built in this process (not in its parent)."""
    return _constructions.get(os.getpid(), 0)


def _explain(cls: type[LibraryApplication[Any]], exc: BaseException) -> str:
    return (
        f"The eventsourcing library cannot build {cls.__qualname__} from this environment: {exc} "
        "It reads PERSISTENCE_MODULE (e.g. eventsourcing.sqlite, eventsourcing.postgres, "
        "eventsourcing_sqlalchemy, uwsgi_es.integrations.eventsourcing.cassandra) and that module's "
        f"settings (SQLITE_DBNAME, POSTGRES_*, ...), each also as {cls.name.upper()}_<KEY>."
    )


def _secrets(env: Environment | dict[str, str]) -> tuple[str, ...]:
    found = []
    for key in _SECRET_KEYS:
        value = env.get(key)
        if value:
            found.append(value)
            if "://" in value:
                found += [part for part in value.replace("@", ":").split(":") if len(part) >= 3]
    return tuple(found)


def _translate(exc: BaseException, where: str, secrets: tuple[str, ...]) -> StoreUnavailableError:
    ours = exc.__cause__
    if isinstance(ours, StoreUnavailableError):  # our Cassandra datastore's, which says more
        return type(ours)(" ".join(scrub(str(ours), secrets).split()))
    message = " ".join(scrub(str(exc), secrets).split())
    lowered = message.lower()
    missing = "does not exist" in lowered and any(w in lowered for w in ("relation", "table", "keyspace"))
    if missing or "no such table" in lowered or "unconfigured table" in lowered:
        return SchemaMissingError(
            f"A table of {where} does not exist ({message}). Create the tables once per deployment "
            "with: uwsgi-es migrate (with UWSGI_ES_APPLICATION naming the application)."
        )
    if "read-only" in lowered or "readonly" in lowered or "disk is full" in lowered:
        return StoreReadOnlyError(f"{where} does not accept writes now ({message}).")
    return StoreUnavailableError(f"{where} is unavailable: {message}")


class LibraryHosting:
    """``lifecycle.hosting.Hosting`` for an eventsourcing library application."""

    def __init__(self, app: LibraryApplication[Any]) -> None:
        self.app = app
        self.built_in_pid = os.getpid()
        # The instance's Environment (the class attribute of the same name is a plain dict).
        self.env: Environment = app.factory.env
        self.module = str(app.env.get("PERSISTENCE_MODULE") or "eventsourcing.popo")
        self.secrets = _secrets(app.env)
        self._closed = False

    def describe(self) -> str:
        return f"{self.app.name} ({self.module} at {self._where()})"

    def _where(self) -> str:
        env = self.env
        if self.module.startswith("eventsourcing.sqlite"):
            return str(env.get("SQLITE_DBNAME"))
        if self.module.startswith("eventsourcing.postgres"):
            return (
                f"postgresql://{env.get('POSTGRES_USER')}@{env.get('POSTGRES_HOST')}:"
                f"{env.get('POSTGRES_PORT') or 5432}/{env.get('POSTGRES_DBNAME')}"
            )
        if self.module.startswith("eventsourcing_sqlalchemy"):
            return redact_url(str(env.get("SQLALCHEMY_URL")))
        if "cassandra" in self.module:
            hosts = env.get("CASSANDRA_HOSTS") or "127.0.0.1"
            return f"{hosts}/{env.get('CASSANDRA_KEYSPACE') or 'eventsourcing'}"
        return "memory"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        fork.refuse_if_forked(self.app.name, self.built_in_pid)
        try:
            yield
        except PersistenceError as exc:
            raise _translate(exc, self.describe(), self.secrets) from exc

    def ping(self) -> None:
        with self._errors():
            recorder = self.app.recorder
            if isinstance(recorder, ApplicationRecorder):
                recorder.max_notification_id()
            else:
                recorder.select_events(self._probe_id(), limit=1)

    def _probe_id(self) -> Any:
        from uuid import UUID

        return UUID(int=0)

    def check_ready(self) -> None:
        """Ping, then check that the store takes writes, the way each persistence module allows."""
        self.ping()
        factory = self.app.factory
        with self._errors():
            check = getattr(factory, "check_writable", None)  # our Cassandra module's heartbeat
            if callable(check):
                check()
            elif self.module.startswith("eventsourcing.sqlite"):
                self._check_sqlite(factory)
            elif self.module.startswith("eventsourcing.postgres"):
                self._check_postgres(factory)

    def _check_sqlite(self, factory: Any) -> None:
        dbname = str(self.env.get("SQLITE_DBNAME") or "")
        if dbname and ":memory:" not in dbname and "mode=memory" not in dbname:
            path = Path(dbname.removeprefix("file:").split("?")[0])
            require_room_for_the_log(path.parent if path.parent.exists() else Path.cwd(), self.describe())
        # A write inside a transaction that is rolled back: a read-only file refuses it, and
        # nothing of the user's changes (the header's user_version is written back as it was).
        with factory.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA user_version")
            version = int(cursor.fetchone()[0])
            cursor.execute(f"PRAGMA user_version = {version}")

    def _check_postgres(self, factory: Any) -> None:
        with factory.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT current_setting('transaction_read_only') AS ro, pg_is_in_recovery() AS standby"
            )
            row = cursor.fetchone()
        if row and (row["ro"] == "on" or row["standby"]):
            raise StoreReadOnlyError(
                f"{self.describe()} is read-only (a standby, or read-only transactions)."
            )

    def report(self) -> dict[str, Any]:
        return {
            "constructions": constructions_in_this_process(),
            **counts,
            "persistence": self.module,
            "snapshotting": bool(strtobool(str(self.env.get("IS_SNAPSHOTTING_ENABLED") or "n"))),
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if fork.inherited(self.built_in_pid):
            _inherited.append(self.app)  # the parent's connections: keep them, untouched, for good
            return
        self.app.close()
        self._dispose_engine()

    def _dispose_engine(self) -> None:
        """eventsourcing_sqlalchemy's close() leaves the engine it made from SQLALCHEMY_URL open
        (its connections would be closed by the garbage collector, or not at all): dispose of it,
        but never of an engine or session the user's code gave it."""
        datastore = getattr(self.app.factory, "datastore", None)
        engine = getattr(datastore, "engine", None)
        if self.env.get("SQLALCHEMY_URL") and getattr(datastore, "scoped_session", True) is None:
            dispose = getattr(engine, "dispose", None)
            if callable(dispose):
                dispose()


def hosting(app: LibraryApplication[Any]) -> LibraryHosting:
    return LibraryHosting(app)
