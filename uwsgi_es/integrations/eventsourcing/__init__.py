"""Deploying applications written with the eventsourcing library (9.5) under uWSGI and the other
servers, exactly as uwsgi_es's own: one per worker, built after the fork.

An ``eventsourcing.application.Application`` subclass is a factory like any other:
``uwsgi_es.install(Dogs)``, ``UWSGI_ES_APPLICATION=myapp.domain:Dogs``, gunicorn's and Celery's hooks,
the lazy getter and the test harness all build it through ``uwsgi_es.lifecycle``, which finds
this module by the name of the library's base class. This module:

- builds it with ``CREATE_TABLE`` off, since tables are a deployment step (``uwsgi-es migrate``
  builds it once with tables on), and validates in the uWSGI master, connecting to nothing, that
  the library can build it from the environment (``hosting``);
- hosts it: ``/ready`` pings its recorder and checks the store takes writes; ``/worker`` and the
  lifecycle log describe it; it is closed when the worker exits, and one inherited across fork
  is kept, never closed (``hosting``);
- gives commands a retry policy for conflicts (``commands.retry_on_conflict``);
- runs the library's projections that ``UWSGI_ES_PROJECTIONS`` names, one per runner mule, built
  after the mule's fork (``projections``), and ``uwsgi-es migrate`` creates their tables;
- ships Cassandra persistence the library lacks (``cassandra``:
  ``PERSISTENCE_MODULE=uwsgi_es.integrations.eventsourcing.cassandra``).

The library keeps its own configuration: ``PERSISTENCE_MODULE``, ``SQLITE_DBNAME``,
``POSTGRES_*``, ``SQLALCHEMY_URL``, ``IS_SNAPSHOTTING_ENABLED``, ``CIPHER_*``, each also under the
application's name (``DOGS_POSTGRES_DBNAME``). uwsgi_es's settings that concern the process
(``UWSGI_ES_FAIL_FAST``, ``GC_FREEZE``, ``INIT_RETRY_*``, ``CONFLICT_RETRIES``, ``MAX_BODY_BYTES``,
``OPERATOR_NETWORKS``) apply to it too; those of uwsgi_es's own stores (``DATABASE_URL``,
``POOL_*``, ``STORE``, ``CASSANDRA_*``) do not.
"""

from __future__ import annotations

from typing import Any

from uwsgi_es.integrations.eventsourcing.building import construct, constructions_in_this_process, validate
from uwsgi_es.integrations.eventsourcing.commands import retry_on_conflict
from uwsgi_es.integrations.eventsourcing.hosting import LibraryHosting, hosting
from uwsgi_es.integrations.eventsourcing.projections import (
    LibraryProjectionRunner,
    build,
    declared,
    named,
    projection_names,
    read_view,
)
from uwsgi_es.settings import Settings

__all__ = [
    "LibraryHosting",
    "LibraryProjectionRunner",
    "construct",
    "constructions_in_this_process",
    "hosting",
    "migrate",
    "projection_names",
    "projection_runner",
    "read_view",
    "retry_on_conflict",
    "validate",
]


def migrate(cls: Any, settings: Settings) -> str:
    """Create the tables of ``cls`` (``uwsgi-es migrate``): build it once with ``CREATE_TABLE`` on,
    check it answers and takes writes, as /ready will, close it."""
    app = construct(cls, {"CREATE_TABLE": "y"})
    host = hosting(app)
    try:
        host.check_ready()
        done = f"schema ready for {host.describe()}"
    finally:
        host.close()
    items = declared(settings.projections)
    for item in items:
        for name, leader in item.leaders().items():  # a system's leaders, but the one hosted here
            if name != cls.name:
                construct(leader, {"CREATE_TABLE": "y"}).close()
        build(item, create_tables=True).close()
    if items:
        done += f"; the tables of {', '.join(item.name for item in items)}"
    return done


def projection_runner(app: Any, name: str, settings: Settings) -> LibraryProjectionRunner:
    """The runner of the declared projection ``name`` over ``app`` (built in this process)."""
    return LibraryProjectionRunner(app, named(settings, name), settings)
