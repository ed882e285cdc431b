"""The read side as the web workers see it: each projection's position, lag and stop, read from the
tracking records (the runners live in other processes), and reads that wait for a position.

**Read your writes.** A write answers with the feed position of its last event
(``X-Event-Position``, see ``uwsgi_es.web.api``). A read of a projection may ask for at least that
position (``X-Min-Position``): ``projected`` waits, at most ``UWSGI_ES_READ_WAIT`` seconds, until the
projection's tracking record has reached it, then gives a connection to read the read model;
past the bound it raises ``ProjectionLagError`` naming the lag (a 503 the client may retry).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from uwsgi_es.application import Application
from uwsgi_es.errors import (
    ProjectionLagError,
    ProjectionStoppedError,
    ReadSideUnavailableError,
    UnsupportedOperationError,
)
from uwsgi_es.lifecycle import process
from uwsgi_es.readside.projection import Projection
from uwsgi_es.readside.runner import feed_store, stopped_message
from uwsgi_es.readside.tracking import read
from uwsgi_es.stores.sqlalchemy.store import SQLAlchemyRecordStore

# How often a waiting read looks at the tracking record again (and wakes the runners).
WAIT_STEP_SECONDS = 0.005
# A lag is counted event by event up to this many (a projection far behind reports this many).
LAG_COUNTED_UP_TO = 100_000


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
    """Each projection's position, lag behind the feed, and stop (for ``/worker``); {} without any."""
    names = _names(app)
    if not names:
        return {}
    store = feed_store(app, "The read side")
    with store.engine.connect() as connection:
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
    """Each projection's position and lag (for ``/ready``); ``ProjectionStoppedError`` when one is
    stopped at an event."""
    reported = report(app)
    for name, status in reported.items():
        if status["stopped_at"] is not None:
            error_type = (status["error"] or "Exception").split(":", 1)[0]
            raise ProjectionStoppedError(
                stopped_message(name, status["stopped_at"], status["stopped_topic"] or "", error_type)
            )
    return {name: {"position": s["position"], "lag": s["lag"]} for name, s in reported.items()}


@contextmanager
def projected(app: Application, projection: type[Projection], at_least: int = 0) -> Iterator[Connection]:
    """A connection to read ``projection``'s tables once it has applied position ``at_least``."""
    if not isinstance(app.records, SQLAlchemyRecordStore):
        raise UnsupportedOperationError(
            f"The read model {projection.name!r} is not kept on this deployment: projections need "
            "the global order of events of the SQL store."
        )
    store = app.records
    deadline = time.monotonic() + app.settings.read_wait
    with store.engine.connect() as connection:
        while at_least > 0:
            position = read(connection, [projection.name])[projection.name].position
            if position >= at_least:
                connection.rollback()  # end the read, so the view's reads see newer commits
                break
            if time.monotonic() >= deadline:
                raise ProjectionLagError(
                    f"The projection {projection.name!r} is at position {position}, before the "
                    f"position {at_least} asked for, after waiting {app.settings.read_wait:g}s "
                    "(UWSGI_ES_READ_WAIT). Retry shortly."
                )
            store.wake_projections(connection)  # and ends the read, so the next sees newer commits
            process.pause(WAIT_STEP_SECONDS)
        yield connection


def _names(app: Any) -> Sequence[str]:
    """The projections to report on: none when the store cannot feed them (a mule says why)."""
    if not isinstance(app, Application) or not isinstance(app.records, SQLAlchemyRecordStore):
        return ()
    return [cls.name for cls in projection_classes(app)]
