"""The read side as the web workers see it: each projection's position, lag and stop, read from the
tracking records (the runners live in other processes), and reads that wait for a position.

**Ready** (``check``, for ``/ready``) means every projection can run: its read-model tables exist
(looked at until they are found, then remembered for the process), it is not stopped at an event,
and its runner has recorded no lasting reason it cannot run (``runner``). Otherwise ``/ready``
answers 503 naming the projection and what is wrong, never the error's text.

**Reads never answer 500** for the database: ``projected`` turns the errors of the reads made
through its connection into the store's (503), a missing read-model table into
``ReadModelMissingError`` naming the projection, the table and ``uwsgi-es migrate``.

**Read your writes.** A write answers with the feed position of its last event
(``X-Event-Position``, see ``uwsgi_es.web.api``). A read of a projection may ask for at least that
position (``X-Min-Position``): ``projected`` waits, at most ``UWSGI_ES_READ_WAIT`` seconds, until the
projection's tracking record has reached it, then gives a connection to read the read model;
past the bound it raises ``ProjectionLagError`` naming the lag (a 503 the client may retry).
While it waits the read holds no database connection: it looks at the tracking record with a
short-lived one (one look per ``WAIT_STEP_SECONDS`` for all the waiting reads of a process), and
opens the connection it reads with once the position is reached. Under uWSGI's gevent loop a
connection held across the wait's yields would leave the worker's pool empty, and the next
checkout would stop every greenlet of the worker. At most ``UWSGI_ES_MAX_WAITING_READS`` reads of
a worker wait at once; another is refused at once (``TooManyWaitingReadsError``, 503 naming it).
"""

from __future__ import annotations

import importlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from uwsgi_es.application import Application
from uwsgi_es.errors import (
    ProjectionCannotRunError,
    ProjectionLagError,
    ProjectionStoppedError,
    ReadSideUnavailableError,
    TooManyWaitingReadsError,
    UnsupportedOperationError,
)
from uwsgi_es.readside.projection import Projection, absent_tables, read_model_missing
from uwsgi_es.readside.runner import database_error, feed_store, is_database_error, stopped_message
from uwsgi_es.readside.tracking import read
from uwsgi_es.runtime import process
from uwsgi_es.settings import Settings
from uwsgi_es.stores import deadlines
from uwsgi_es.stores.base import ProjectionFeed
from uwsgi_es.stores.sqlalchemy.engine import pool_exhausted

# How often a waiting read looks at the tracking record again (and wakes the runners).
WAIT_STEP_SECONDS = 0.005
# A lag is counted event by event up to this many (a projection far behind reports this many).
LAG_COUNTED_UP_TO = 100_000
# Global state, admitted: per engine, the projections whose tables this process has seen exist
# (tables are not dropped under a running service; a read still names them if they are).
_tables_found: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
# Global state, admitted: per engine and projection, the position this process read last and when,
# so a process's waiting reads share one look per WAIT_STEP_SECONDS however many they are.
_seen: weakref.WeakKeyDictionary[Engine, dict[str, tuple[int, float]]] = weakref.WeakKeyDictionary()
# Reads of this process waiting for a position now (greenlets under gevent, or threads).
_waiting = 0
_waiting_lock = threading.Lock()
# Held by the one read of this process looking at a tracking record now (never waited for).
_looking = threading.Lock()


def projection_classes(app: Any) -> list[type[Projection]]:
    """The projections an application (or application class) declares, resolved."""
    owner = app if isinstance(app, type) else type(app)
    found = []
    for declared in getattr(owner, "projections", ()):
        cls = _imported(declared, owner) if isinstance(declared, str) else declared
        if not (isinstance(cls, type) and issubclass(cls, Projection)):
            raise ReadSideUnavailableError(
                f"{owner.__qualname__}.projections names {declared!r}, which is not a "
                "uwsgi_es.readside.Projection subclass."
            )
        found.append(cls)
    return found


def _imported(import_string: str, owner: type) -> Any:
    module_name, _, attribute = import_string.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ReadSideUnavailableError(
            f"{owner.__qualname__}.projections names {import_string!r}, which cannot be imported ({exc})."
        ) from exc


def projection_named(app: Application, name: str) -> type[Projection]:
    classes = projection_classes(app)
    for cls in classes:
        if cls.name == name:
            return cls
    known = ", ".join(cls.name for cls in classes) or "none"
    raise ReadSideUnavailableError(
        f"{type(app).__qualname__} has no projection named {name!r} (its projections: {known})."
    )


def report(app: Any) -> dict[str, dict[str, Any]]:
    """Each projection's position, lag (the events stored after it, also those the feed does not
    show yet: ``count_after``), and stop or reason it cannot run (``error`` without
    ``stopped_at``), for ``/worker``; {} without any."""
    names = _names(app)
    if not names:
        return {}
    store = feed_store(app, "The read side")
    with _translated(store), store.engine.connect() as connection:
        tracked = read(connection, names)
    return {
        name: {
            "position": t.position,
            "lag": store.count_after(t.position, LAG_COUNTED_UP_TO),
            "stopped_at": t.error_position,
            "stopped_topic": t.error_topic,
            "error": t.error,
        }
        for name, t in tracked.items()
    }


def check(app: Any) -> dict[str, dict[str, int]]:
    """Each projection's position and lag (for ``/ready``); ``ReadModelMissingError`` when one's
    tables do not exist, ``ProjectionStoppedError`` when one is stopped at an event,
    ``ProjectionCannotRunError`` when one's runner recorded why it cannot run."""
    if _names(app):
        store = feed_store(app, "The read side")
        missing = missing_tables(store, _unverified(store, app))
        if missing:
            raise read_model_missing(*next(iter(missing.items())))
    reported = report(app)
    for name, status in reported.items():
        error = status["error"] or "Exception"
        if status["stopped_at"] is not None:
            raise ProjectionStoppedError(
                stopped_message(name, status["stopped_at"], status["stopped_topic"] or "", _type_of(error))
            )
        if status["error"] is not None:
            raise ProjectionCannotRunError(
                f"The projection {name!r} cannot run: its runner keeps failing with "
                f"{_type_of(error)}, not because of an event (the database, or a table it reads). "
                "It retries by itself; its log and /worker have the whole error."
            )
    return {name: {"position": s["position"], "lag": s["lag"]} for name, s in reported.items()}


def missing_tables(store: ProjectionFeed, projections: Iterable[type[Projection]]) -> dict[str, list[str]]:
    """For each of ``projections`` whose read-model tables are not all in the store's database, the
    names of those missing (``uwsgi-es check``; ``/ready``); {} when every table exists."""
    found = _tables_found.setdefault(store.engine, set())
    missing: dict[str, list[str]] = {}
    with _translated(store), store.engine.connect() as connection:
        for projection in projections:
            absent = absent_tables(projection, connection)
            if absent:
                missing[projection.name] = absent
            else:
                found.add(projection.name)
    return missing


def _unverified(store: ProjectionFeed, app: Any) -> list[type[Projection]]:
    """The application's projections whose tables this process has not yet seen exist."""
    found = _tables_found.get(store.engine, set())
    return [cls for cls in projection_classes(app) if cls.name not in found]


def _type_of(error: str) -> str:
    """The exception type a tracking record's error begins with (its text may hold data)."""
    return error.split(":", 1)[0][:100]


@contextmanager
def _translated(store: ProjectionFeed) -> Iterator[None]:
    """The store's errors for the driver's: a 503 naming the cause, never a 500."""
    try:
        yield
    except DBAPIError as exc:
        raise database_error(store, None, exc) from exc
    except PoolTimeoutError as exc:
        raise pool_exhausted(store.engine, store.describe()) from exc
    except SQLAlchemyError as exc:
        raise store.unavailable(exc) from exc


@contextmanager
def projected(app: Application, projection: type[Projection], at_least: int = 0) -> Iterator[Connection]:
    """A connection to read ``projection``'s tables once it has applied position ``at_least``. The
    database's errors of the reads made through it are the store's (a 503 naming the cause)."""
    if not isinstance(app.records, ProjectionFeed):
        raise UnsupportedOperationError(
            f"The read model {projection.name!r} is not kept on this deployment: projections need "
            "the global order of events of the SQL store."
        )
    store = app.records
    try:
        if at_least > 0:
            with deadlines.not_counted():  # waiting for the projection is not waiting for the database
                _wait_for(app, store, projection, at_least)
        # Opened once the position is reached: its reads see the projection's commits up to it.
        with store.engine.connect() as connection, process.holding_connection():
            yield connection
    except PoolTimeoutError as exc:
        raise pool_exhausted(store.engine, store.describe()) from exc
    except DBAPIError as exc:
        if not is_database_error(exc):
            raise  # the reader's own mistake (a bad query): a bug, not the database
        raise database_error(store, projection, exc) from exc
    except SQLAlchemyError as exc:
        raise store.unavailable(exc) from exc


def _wait_for(app: Application, store: ProjectionFeed, projection: type[Projection], at_least: int) -> None:
    """Return once the projection has applied ``at_least``, holding no connection in between."""
    wait_for_position(projection.name, at_least, lambda: _position(store, projection, at_least), app.settings)


def wait_for_position(
    name: str,
    at_least: int,
    position: Callable[[], int],
    settings: Settings,
    step: float = WAIT_STEP_SECONDS,
) -> None:
    """Return once ``position()``, the projection ``name``'s, has reached ``at_least``, looking
    again every ``step`` without holding up the worker's other requests; ``ProjectionLagError``
    past ``UWSGI_ES_READ_WAIT``, ``TooManyWaitingReadsError`` when this process already has
    ``UWSGI_ES_MAX_WAITING_READS`` reads waiting."""
    deadline = time.monotonic() + settings.read_wait
    reached = position()
    with ExitStack() as waiting:
        placed = False
        while reached < at_least:
            if time.monotonic() >= deadline:
                raise ProjectionLagError(
                    f"The projection {name!r} is at position {reached}, before the "
                    f"position {at_least} asked for, after waiting {settings.read_wait:g}s "
                    "(UWSGI_ES_READ_WAIT). Retry shortly."
                )
            if not placed:  # first time round: take a waiting read's place
                waiting.enter_context(_waiting_place(settings.max_waiting_reads))
                placed = True
            process.pause(step)
            reached = position()


def _position(store: ProjectionFeed, projection: type[Projection], at_least: int) -> int:
    """The projection's position, read on a short-lived connection unless this process read it
    less than ``WAIT_STEP_SECONDS`` ago or another read is looking now (one looks at a time, so
    waiting threads take one connection, not one each); short of ``at_least``, the runners are
    woken too."""
    seen = _seen.setdefault(store.engine, {})
    last = seen.get(projection.name)
    now = time.monotonic()
    if last is not None and now - last[1] < WAIT_STEP_SECONDS:
        return last[0]
    alone = _looking.acquire(blocking=False)  # never waits: under gevent the holder may yield
    if not alone and last is not None:
        return last[0]
    try:
        with store.engine.connect() as connection:
            position = read(connection, [projection.name])[projection.name].position
            if position < at_least:
                store.wake_projections(connection)  # PostgreSQL's NOTIFY; sooner than their next poll
    finally:
        if alone:
            _looking.release()
    seen[projection.name] = (position, now)
    return position


@contextmanager
def _waiting_place(bound: int) -> Iterator[None]:
    """One of this process's ``bound`` places for reads waiting for a position, or a refusal."""
    global _waiting
    with _waiting_lock:
        if _waiting >= bound:
            raise TooManyWaitingReadsError(
                f"This worker already has {bound} reads waiting for a projection to reach the "
                "position they ask for (X-Min-Position): that is its bound, UWSGI_ES_MAX_WAITING_READS, "
                "so this read was refused without waiting. Retry shortly."
            )
        _waiting += 1
    try:
        yield
    finally:
        with _waiting_lock:
            _waiting -= 1


def _names(app: Any) -> Sequence[str]:
    """The projections to report on: none when the store cannot feed them (a mule says why)."""
    if not isinstance(app, Application) or not isinstance(app.records, ProjectionFeed):
        return ()
    return [cls.name for cls in projection_classes(app)]
