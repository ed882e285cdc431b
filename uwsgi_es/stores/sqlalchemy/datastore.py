"""One process's SQL database, as both our record store and the read side use it: the engine and
its pool, the request's ORM session, the transaction a statement runs in, one retry on a dropped
connection, the SQLite file's identity, and the driver's errors as ours.

- The engine is created in the process that uses it (after the fork); nothing here connects at
  import time. Closing it in a forked child only forgets the parent's pooled sockets.
- Where a statement runs (``transaction``): in the keyed request's write transaction when one is
  open in this context (``joining``: its appends join it through a savepoint), in the view's
  session when it opened a transaction (a savepoint there too), else on a pooled Core connection
  for that statement alone (on PostgreSQL in autocommit: one statement is its own transaction,
  except behind a transaction pooler, where a transaction carries the guards).
- ``retry_once``: an operation whose pooled connection the server dropped runs once more on a new
  one, unless it may have been committed or runs in a transaction someone else began; under
  uWSGI's gevent loop its lock waits are taken in slices, so the worker's other requests run.
- SQLite: a write is acknowledged only if, after its commit, the database path still names the
  file the connection wrote to (``check_same_file``); writes queue for the file in
  ``WriterQueue`` with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import unquote

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from uwsgi_es.errors import (
    DeadlinePassedError,
    PoolExhaustedError,
    SchemaMissingError,
    StoreBusyError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from uwsgi_es.redaction import redact_url, scrub, secrets_of
from uwsgi_es.runtime import process
from uwsgi_es.stores import deadlines, unit_of_work
from uwsgi_es.stores.sqlalchemy.engine import (
    FILE_IDENTITY,
    WRITE,
    file_identity,
    is_pooled,
    lock_bound,
    pool_exhausted,
    sqlite_path,
    translate,
)
from uwsgi_es.stores.sqlalchemy.schema import SELECT_ANY
from uwsgi_es.stores.sqlalchemy.writers import WriterQueue

if TYPE_CHECKING:  # the ORM is imported only when a view asks for a session (see `sessions`)
    from sqlalchemy.orm import Session, scoped_session

log = logging.getLogger("uwsgi_es.stores.sqlalchemy.store")
Operation = TypeVar("Operation", bound=Callable[..., Any])


class HoldsDatastore(Protocol):
    """What ``retry_once`` decorates the methods of: something holding a datastore."""

    @property
    def datastore(self) -> SQLAlchemyDatastore: ...


def retry_once(operation: Operation) -> Operation:
    """Run a store operation again, once, when its pooled connection turned out to be dead (the
    server restarted, or ended the session) before anything was committed.

    This replaces a ping before every checkout (one round trip per request) with nothing on the
    hot path: a connection the server dropped fails its first statement, SQLAlchemy retires it and
    every connection pooled before it, and the second attempt runs on a new one. Never retried: a
    failure at COMMIT (it may have been stored), and work in a transaction someone else began (a
    keyed request's, a view's session), which must fail whole.

    Within a request under uWSGI's gevent loop, an operation of its own also waits for a lock in
    slices (``uwsgi_es.stores.deadlines``): after a slice timed out it runs again, after a yield
    that holds no connection, until the request's deadline. The worker's other requests run
    meanwhile, instead of queueing behind the whole wait."""

    @functools.wraps(operation)
    def attempt(store: HoldsDatastore, *args: Any, **kwargs: Any) -> Any:
        bound = lock_bound(store.datastore.engine)
        if (
            bound is None
            or not deadlines.slices_waits()
            or store.datastore.joined()
            or process.holds_connection()
        ):
            return once_more(store, *args, **kwargs)
        while True:  # its waits in slices, taking turns with the process's other requests
            with deadlines.turn(bound) as timed_out:
                try:
                    with deadlines.sliceable():
                        return once_more(store, *args, **kwargs)
                except StoreBusyError as exc:
                    timed_out[0] = _sliced_wait_timed_out(exc)
                    if not timed_out[0] or deadlines.left(bound) <= deadlines.SLICE_SECONDS:
                        raise
            process.pause(random.uniform(0.5, 1.0) * deadlines.SLICE_SECONDS)  # no connection held

    def once_more(store: HoldsDatastore, *args: Any, **kwargs: Any) -> Any:
        unit_of_work.committing(False)
        try:
            return operation(store, *args, **kwargs)
        except StoreUnavailableError as exc:
            if not dropped(exc) or unit_of_work.current().committing or store.datastore.joined():
                raise
            log.info("retrying once on a new connection: %s", exc)
            return operation(store, *args, **kwargs)

    return cast(Operation, attempt)


def _sliced_wait_timed_out(error: StoreBusyError) -> bool:
    """Whether ``error`` ends a wait for a lock that wrote nothing, so the operation may run again:
    not the refusal past the deadline, not the pool's own bounded wait, not a wait that may have
    written (SQLite's COMMIT)."""
    if isinstance(error, DeadlinePassedError | PoolExhaustedError):
        return False
    return not unit_of_work.current().committing or _lock_not_available(error)


def _lock_not_available(error: StoreBusyError) -> bool:
    """PostgreSQL's lock_timeout: the statement never ran, so nothing was written."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and getattr(cause.orig, "sqlstate", None) == "55P03"


def answered(error: StoreUnavailableError) -> bool:
    """Whether the server answered the failed statement with an error (a SQLSTATE: it was not
    committed), rather than the connection breaking with no answer."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and getattr(cause.orig, "sqlstate", None) is not None


def dropped(error: StoreUnavailableError) -> bool:
    """Whether the error is the server dropping the connection (SQLAlchemy then retires it)."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and cause.connection_invalidated


class SQLAlchemyDatastore:
    """One process's connection to an SQL database through SQLAlchemy (SQLite or PostgreSQL).

    ``sessions`` given by someone else (Flask-SQLAlchemy's ``db.session``) are theirs to remove;
    ``owns_engine`` false: the engine is someone else's to dispose of."""

    def __init__(
        self,
        engine: Engine,
        *,
        sessions: scoped_session[Session] | None = None,
        owns_engine: bool = True,
        url: str | None = None,
        writer_timeout: float = 5.0,
    ) -> None:
        self.engine = engine
        self.url = url or engine.url.render_as_string(hide_password=False)
        self.secrets = secrets_of(self.url)
        self._owns_sessions = sessions is None
        self._sessions = sessions
        self._sessions_lock = threading.Lock()
        self._owns_engine = owns_engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_postgres = engine.dialect.name == "postgresql"
        self.path = _database_file(engine) if self.is_sqlite else None
        self._writers = WriterQueue(f"{self.path}.writers", writer_timeout) if self.path else None

    @property
    def sessions(self) -> scoped_session[Session]:
        """The request's ORM session, for views that do their own work in the store's database.

        Made on first use: the store's own statements run on Core connections, so a worker that
        never asks for a session never imports the ORM (about 6 MB per worker).
        """
        if self._sessions is None:
            with self._sessions_lock:
                if self._sessions is None:
                    from sqlalchemy.orm import scoped_session, sessionmaker

                    self._sessions = scoped_session(sessionmaker(bind=self.engine))
        return self._sessions

    def describe(self) -> str:
        return f"SQLAlchemy store at {redact_url(self.url)}"

    def scrub(self, message: object) -> str:
        """``message`` (e.g. a driver's error) on one line, with the URL's secrets masked."""
        return " ".join(scrub(str(message), self.secrets).split())

    def unavailable(self, error: object) -> StoreUnavailableError:
        return StoreUnavailableError(f"{self.describe()} is unavailable: {self.scrub(error)}")

    def create_file(self) -> None:
        """SQLite: create the database file (migrate does; workers open it with mode=rw and never
        create it: an empty file is an empty SQLite database)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(exist_ok=True)

    def ping(self) -> None:
        """One round trip on a plain connection (not the request's session: ping also runs outside
        any request, right after the build), and the SQLite file checked."""
        if self.path is not None and not self.path.exists():
            # Connecting would fail with SQLite's "unable to open database file": say what to do.
            raise SchemaMissingError(
                f"The SQLite database file {self.path.resolve()} does not exist. "
                "Create it once per deployment with: uwsgi-es migrate"
            )
        with self.errors(), self.engine.connect() as connection:
            connection.execute(SELECT_ANY).all()
            self.check_same_file(connection)

    @contextmanager
    def joining(self, connection: Connection) -> Iterator[None]:
        """Within: this context's statements on this datastore join ``connection``'s transaction
        (a keyed request's unit of work) instead of taking their own."""
        with unit_of_work.joining(self, connection):
            yield

    def end_request(self) -> None:
        if self._owns_sessions and self._sessions is not None:
            self._sessions.remove()

    def pool_status(self) -> dict[str, int]:
        checked_out = getattr(self.engine.pool, "checkedout", None)
        return {"checked_out": int(checked_out())} if callable(checked_out) else {}

    def forget(self) -> None:
        self.engine.dispose(close=False)  # the pooled sockets are the parent's: never close them

    def release(self) -> None:
        if self._owns_sessions and self._sessions is not None:
            self._sessions.remove()
        if self._writers is not None:
            self._writers.close()
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def transaction(self, *, write: bool, alone: bool = True) -> Iterator[Session | Connection]:
        """Where the store's own statements run.

        If the request's session is already in a transaction (the view did its own work in it,
        e.g. a Flask-SQLAlchemy view), join it by a savepoint, so both commit or roll back
        together. Otherwise use a pooled Core connection for just this statement: half the cost of
        an ORM session on the hot path, and the connection is back in the pool when it returns.
        On PostgreSQL a statement run ``alone`` (every operation but readiness) runs in autocommit:
        one statement is its own transaction, so BEGIN and COMMIT would only add round trips.
        Behind a transaction pooler it runs in a transaction all the same, which sets its guards.
        """
        connection = unit_of_work.current().joins(self)
        if connection is not None:
            if write:
                with connection.begin_nested():
                    yield connection
            else:
                yield connection
            return
        if self._sessions is not None and self._sessions.registry.has():
            session = self._sessions()
            if session.in_transaction():
                with session.begin_nested():
                    yield session
                return
        with self.engine.connect() as connection:
            if alone and self.is_postgres and not is_pooled(connection):
                connection.execution_options(isolation_level="AUTOCOMMIT")
                if write:
                    unit_of_work.committing(True)  # the statement commits itself: a failure may come after
                yield connection
                return
            with self.in_transaction(connection, write=write):
                yield connection

    @contextmanager
    def in_transaction(self, connection: Connection, *, write: bool) -> Iterator[None]:
        if write and self._writers is not None:
            connection.execution_options(**{WRITE: True})  # SQLite: BEGIN IMMEDIATE
            with self._writers:
                with connection.begin():
                    self.check_same_file(connection)
                    yield
                    unit_of_work.committing(True)
                # Committed: acknowledge only if the path still names the file written to.
                self.check_same_file(connection)
            return
        with connection.begin():
            yield
            unit_of_work.committing(True)
        self.check_same_file(connection)

    def joined(self) -> bool:
        """Whether this context's statements run in a transaction someone else began."""
        if unit_of_work.current().joins(self) is not None:
            return True
        return (
            self._sessions is not None and self._sessions.registry.has() and self._sessions().in_transaction()
        )

    def check_same_file(self, connection: Connection) -> None:
        """Refuse (503) when the SQLite file this connection uses was deleted or replaced."""
        if self.path is None:
            return
        opened = connection.info.get(FILE_IDENTITY)
        if opened is None or opened == file_identity(self.path):
            return
        connection.invalidate()
        self.engine.dispose()  # every pooled connection holds the old file: reopen on next use
        raise StoreUnavailableError(
            f"The SQLite database file {self.path.resolve()} was deleted or replaced while this "
            "worker used it: writes would go to a file nobody reads again, so none is acknowledged. "
            "Restore the file, or create a new one with: uwsgi-es migrate"
        )

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn driver errors into ours; integrity errors pass through for the caller to judge."""
        try:
            yield
        except IntegrityError:
            raise
        except DBAPIError as exc:
            error = translate(exc, self.describe(), self.scrub)
            if self.is_sqlite and isinstance(error, StoreReadOnlyError) and self._owns_engine:
                # Every connection SQLite opened while the file was read-only stays read-only (and
                # keeps the WAL index mapped read-only for the others): close them all, so the next
                # attempt reopens the file and writes again once it is writable.
                self.engine.dispose()
            raise error from exc
        except PoolTimeoutError as exc:  # every pooled connection stayed in use
            raise pool_exhausted(self.engine, self.describe()) from exc
        except SQLAlchemyError as exc:
            raise self.unavailable(exc) from exc


def _database_file(engine: Engine) -> Path | None:
    path = sqlite_path(engine.url)
    if path is None:
        return None
    text = str(path)
    return Path(unquote(text.removeprefix("file:"))) if text.startswith("file:") else path
