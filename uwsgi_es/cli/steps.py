"""The deployment steps themselves: ``migrate``, ``check`` and ``project``, for one application;
and the day-2 operations on its projections (``status``, ``park``, ``replay``, ``reset``).

Each takes the settings and the application's factory (``cli.target`` finds it: from the ini
uWSGI runs, or ``UWSGI_ES_APPLICATION``) and returns one line saying what it did.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from typing import Any

from uwsgi_es.errors import ConfigurationError, ProjectionOperationError
from uwsgi_es.lifecycle import kinds, registry
from uwsgi_es.readside.projection import Projection, read_model_missing
from uwsgi_es.readside.runner import ProjectionRunner
from uwsgi_es.readside.status import missing_tables, projection_classes, projection_named
from uwsgi_es.runtime.log import configure_logging
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore


def _factory(settings: Settings, factory: Any | None) -> Any | None:
    """The factory given, else the one UWSGI_ES_APPLICATION names, else None."""
    if factory is not None:
        return factory
    return kinds.load_factory(settings.application) if settings.application else None


def _library_kind(factory: Any | None) -> kinds.Kind | None:
    """The kind of ``factory`` when its tables are its own (an eventsourcing library application);
    None for uwsgi_es's own store."""
    if factory is None:
        return None
    kind = kinds.kind_of(factory)
    return kind if kind.migrate is not None else None


def migrate(settings: Settings, factory: Any | None = None) -> str:
    """Create every table the application needs (idempotent): the store's events, snapshots,
    tracking and idempotency tables, and each of its projections' read models."""
    factory = _factory(settings, factory)
    kind = _library_kind(factory)
    if kind is not None and kind.migrate is not None:
        return kind.migrate(settings)
    # DDL on a large table (CREATE INDEX) may rightly run longer than any request's statement.
    store = create_record_store(dataclasses.replace(settings, statement_timeout=0.0))
    try:
        store.create_schema()
        store.ping()
        done = f"schema ready in {store.describe()}"
        projections = _projections(factory)
        if projections and isinstance(store, SQLAlchemyRecordStore):
            for projection in projections:
                projection.metadata.create_all(store.engine, checkfirst=True)
            done += f"; read models of {', '.join(p.name for p in projections)}"
        return done
    finally:
        store.close()


def _projections(factory: Any | None) -> list[type[Projection]]:
    return projection_classes(factory) if factory is not None else []


def check(settings: Settings, factory: Any | None = None) -> str:
    """Validate the settings, ping the store and check it has the application's tables."""
    factory = _factory(settings, factory)
    kind = _library_kind(factory)
    if kind is not None:
        if kind.check is not None:
            kind.check()
        _, hosting = kind.construct(settings)
        try:
            hosting.ping()
            return f"settings valid; {hosting.describe()} answers and has its tables"
        finally:
            hosting.close()
    store = create_record_store(settings)
    try:
        store.ping()
        projections = _projections(factory)
        if projections and isinstance(store, SQLAlchemyRecordStore):
            for name, tables in missing_tables(store, projections).items():
                raise read_model_missing(name, tables)
            return (
                f"settings valid; {store.describe()} answers and has its tables and the read models "
                f"of {', '.join(p.name for p in projections)}"
            )
        return f"settings valid; {store.describe()} answers and has its tables"
    finally:
        store.close()


def project(settings: Settings, name: str, factory: Any | None = None) -> str:
    """Run the projection ``name`` here until SIGTERM or SIGINT (what a runner mule does)."""
    configure_logging()
    factory = _factory(settings, factory)
    kind = kinds.kind_of(factory) if factory is not None else None
    app = registry.init_application(factory, settings=settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if kind is not None and kind.runner is not None:  # the eventsourcing library's projection
            adapted = kind.runner(app, name, settings)
            try:
                adapted.run(stop)
            finally:
                adapted.close()
        else:
            ProjectionRunner(app, projection_named(app, name)()).run(stop)
    finally:
        registry.close_application()
    return f"{name} stopped"


def operations(settings: Settings, factory: Any | None) -> tuple[Any, Callable[[], None]]:
    """The application whose projections an operator's command acts on, built here (never in a
    worker), and what closes it. uwsgi_es's own projections only."""
    factory = _factory(settings, factory)
    if factory is None:
        raise ConfigurationError(
            "Which application's projections? Pass --ini with the ini uWSGI runs, or set "
            "UWSGI_ES_APPLICATION=module:Class."
        )
    if _library_kind(factory) is not None:
        raise ProjectionOperationError(
            f"{getattr(factory, '__qualname__', factory)} is an eventsourcing library application: "
            "status, park, replay, reset and rebuild act on uwsgi_es projections (uwsgi_es.readside); the "
            "library's projections keep their positions in their views' tracking tables, and "
            "/worker reports them."
        )
    app = registry.init_application(factory, settings=settings)
    return app, registry.close_application
