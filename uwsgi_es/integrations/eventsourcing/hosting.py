"""Hosting an application of the eventsourcing library in a worker (built by ``building``): say
whether it can serve, describe it without secrets, report its projections, and close it, but never
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsourcing.application import Application as LibraryApplication
from eventsourcing.dcb.api import DCBRecorder
from eventsourcing.persistence import ApplicationRecorder, PersistenceError
from eventsourcing.utils import Environment, strtobool

from uwsgi_es.errors import StoreReadOnlyError
from uwsgi_es.integrations.eventsourcing.building import constructions_in_this_process, secrets, translate
from uwsgi_es.integrations.eventsourcing.commands import counts
from uwsgi_es.integrations.eventsourcing.projections import close_views, report
from uwsgi_es.redaction import redact_url
from uwsgi_es.runtime import fork
from uwsgi_es.settings import resolve
from uwsgi_es.stores.base import require_room_for_the_log

# The library's persistence modules on PostgreSQL (its applications', its DCB applications').
POSTGRES_MODULES = ("eventsourcing.postgres", "eventsourcing.dcb.postgres")
# Applications inherited across fork: kept referenced so they are never finalised in the child.
_inherited: list[Any] = []


class LibraryHosting:
    """``lifecycle.hosting.Hosting`` for an eventsourcing library application."""

    def __init__(self, app: LibraryApplication[Any]) -> None:
        self.app = app
        self.built_in_pid = os.getpid()
        # The instance's Environment (the class attribute of the same name is a plain dict).
        self.env: Environment = app.factory.env
        self.module = str(app.env.get("PERSISTENCE_MODULE") or "eventsourcing.popo")
        self.secrets = secrets(app.env)
        self._closed = False

    def describe(self) -> str:
        return f"{self.app.name} ({self.module} at {self._where()})"

    def _where(self) -> str:
        env = self.env
        if self.module.startswith("eventsourcing.sqlite"):
            return str(env.get("SQLITE_DBNAME"))
        if self.module.startswith(POSTGRES_MODULES):
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
            raise translate(exc, self.describe(), self.secrets) from exc

    def ping(self) -> None:
        with self._errors():
            recorder = self.app.recorder
            if isinstance(recorder, ApplicationRecorder):
                recorder.max_notification_id()
            elif isinstance(recorder, DCBRecorder):  # a DCBApplication's
                next(iter(recorder.read(limit=1)), None)
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
            elif self.module.startswith(POSTGRES_MODULES):
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

    def projections(self) -> dict[str, dict[str, int]]:
        """Each projection ``UWSGI_ES_PROJECTIONS`` declares: its position and lag, for
        ``/ready``, ``/worker`` and ``/metrics`` (read through views built in this process)."""
        fork.refuse_if_forked(self.app.name, self.built_in_pid)
        return report(self.app, resolve()[0])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if fork.inherited(self.built_in_pid):
            _inherited.append(self.app)  # the parent's connections: keep them, untouched, for good
            return
        close_views(self.app)
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
