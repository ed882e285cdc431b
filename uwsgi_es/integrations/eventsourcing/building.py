"""Building an application of the eventsourcing library in this process: the environment the
library reads (its class ``env``, the process's, prefixed by the application's name), checked in
the uWSGI master connecting to nothing (``validate``), built after the fork without creating
tables (``construct``), and the library's persistence errors as ours, scrubbed of secrets
(``translate``)."""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

from eventsourcing.application import Application as LibraryApplication
from eventsourcing.dcb.application import DCBApplication
from eventsourcing.dcb.persistence import DCBInfrastructureFactory
from eventsourcing.persistence import InfrastructureFactory, InfrastructureFactoryError, PersistenceError
from eventsourcing.utils import Environment

from uwsgi_es.errors import ConfigurationError, SchemaMissingError, StoreReadOnlyError, StoreUnavailableError
from uwsgi_es.redaction import scrub
from uwsgi_es.stores import unit_of_work

# What each persistence module reads that may be a secret (never shown, scrubbed from messages).
_SECRET_KEYS = ("POSTGRES_PASSWORD", "SQLALCHEMY_URL", "CIPHER_KEY", "CASSANDRA_PASSWORD")

_lock = threading.Lock()
_constructions: dict[int, int] = {}


def environment(cls: type[Any], overrides: dict[str, str] | None = None) -> Environment:
    """The environment the library gives ``cls`` (its class ``env``, the process's, prefixed by
    the application's name), plus ``overrides`` for both the plain and the prefixed keys."""
    values: dict[str, str] = dict(cls.env)
    if getattr(cls, "is_snapshotting_enabled", False) or getattr(cls, "snapshotting_intervals", None):
        values["IS_SNAPSHOTTING_ENABLED"] = "y"
    values.update(os.environ)
    for key, value in (overrides or {}).items():
        values[key] = value
        values[f"{cls.name.upper()}_{key}"] = value
    return Environment(cls.name, values)


def validate(cls: type[Any]) -> None:
    """Check, connecting to nothing, that the library can build ``cls`` from this environment:
    its persistence module resolves and finds every setting it needs. (Run in the uWSGI master.)"""
    kind = DCBInfrastructureFactory if issubclass(cls, DCBApplication) else InfrastructureFactory
    try:
        factory = kind.construct(environment(cls, {"CREATE_TABLE": "n"}))
    except (InfrastructureFactoryError, OSError, ValueError, ImportError) as exc:
        raise ConfigurationError(_explain(cls, exc)) from None
    factory.close()  # built only to check the settings: its pools were never opened


def construct(cls: type[Any], overrides: dict[str, str] | None = None) -> Any:
    """Build ``cls`` in this process, its tables left to ``uwsgi-es migrate``."""
    try:
        app = cls(env=environment(cls, {"CREATE_TABLE": "n", **(overrides or {})}))
    except (InfrastructureFactoryError, OSError, ValueError, ImportError) as exc:
        raise ConfigurationError(_explain(cls, exc)) from exc
    except PersistenceError as exc:
        raise translate(exc, f"{cls.name}'s store", secrets(environment(cls))) from exc
    with _lock:
        _constructions[os.getpid()] = _constructions.get(os.getpid(), 0) + 1
    if isinstance(app, LibraryApplication):  # a DCBApplication's position is its slice's
        _answer_positions(app)
    return app


def _answer_positions(app: LibraryApplication[Any]) -> None:
    """Make each save record the notification id of its last event in this context's unit of work,
    as our own store does: the web layer answers it (``X-Event-Position``), a read of a projection
    asks for it (``X-Min-Position``). The library's ``save`` returns those ids; its other callers
    (followers record with ``_record``) are left as they are."""
    save = app.save

    @functools.wraps(save)
    def save_and_answer(*objs: Any, **kwargs: Any) -> Any:
        recordings = save(*objs, **kwargs)
        ids = [getattr(recording.notification, "id", None) for recording in recordings]
        last = max((i for i in ids if isinstance(i, int)), default=None)
        if last is not None:
            unit_of_work.stored_at(last)
        return recordings

    setattr(app, "save", save_and_answer)  # noqa: B010 (an instance's method, wrapped)


def constructions_in_this_process() -> int:
    """How many library applications the registry built in this process (not in its parent)."""
    return _constructions.get(os.getpid(), 0)


def _explain(cls: type[Any], exc: BaseException) -> str:
    return (
        f"The eventsourcing library cannot build {cls.__qualname__} from this environment: {exc} "
        "It reads PERSISTENCE_MODULE (e.g. eventsourcing.sqlite, eventsourcing.postgres, "
        "eventsourcing_sqlalchemy, uwsgi_es.integrations.eventsourcing.cassandra) and that module's "
        f"settings (SQLITE_DBNAME, POSTGRES_*, ...), each also as {cls.name.upper()}_<KEY>."
    )


def secrets(env: Environment | dict[str, str]) -> tuple[str, ...]:
    found = []
    for key in _SECRET_KEYS:
        value = env.get(key)
        if value:
            found.append(value)
            if "://" in value:
                found += [part for part in value.replace("@", ":").split(":") if len(part) >= 3]
    return tuple(found)


def translate(exc: BaseException, where: str, secrets: tuple[str, ...]) -> StoreUnavailableError:
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
