"""Day-2 operations on projections, for operators (``uwsgi-es status``, ``park``, ``replay``,
``reset``), run from a shell beside the running service, never in a worker.

- **status**: each projection's position, the feed's head, its lag, why it is stopped or cannot
  run, and the events parked for it.
- **park**: a projection stopped at an event goes on without it. The event's position, topic and
  error are recorded in ``uwsgi_es_parked`` and the tracking record moves to that position, in one
  transaction that holds the tracking record's lock, so the runner (in its back-off) resumes after
  the event within about a second. Nothing is skipped silently: the parked event stays visible in
  ``status`` until it is replayed.
- **replay**: applies a parked event now (after the fix is deployed) through the projection's own
  ``process_batch``, in one transaction with the removal of its parked row and under the tracking
  record's lock; the events after it were applied before it, so only a read model that does not
  depend on the order of one key's events may replay (a count, a log); when it fails again,
  nothing changes and it stays parked.
- **reset**: empties the projection's tables and moves its tracking record back to 0 (and forgets
  its parked events: the rebuild applies them again), in one transaction under the same lock: the
  runner rebuilds the read model from the first event while readers see it fill up.

The tracking record's lock is what makes each operation safe against the runner: it takes the
same lock for every batch, so an operation happens entirely between two of its batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from uwsgi_es.application import Application, EventStore
from uwsgi_es.errors import ProjectionOperationError, UnreadableEventError
from uwsgi_es.readside.projection import Projection
from uwsgi_es.readside.runner import feed_store
from uwsgi_es.readside.status import LAG_COUNTED_UP_TO, projection_classes, projection_named
from uwsgi_es.readside.tracking import advance, lock, read
from uwsgi_es.stores.base import StoredRecord
from uwsgi_es.stores.sqlalchemy.schema import parked_table, records_table

_parked = parked_table.c


@dataclass(frozen=True)
class Parked:
    position: int
    topic: str
    error: str
    parked_at: float


@dataclass(frozen=True)
class ProjectionStatus:
    """What ``uwsgi-es status`` says about one projection."""

    name: str
    position: int
    head: int  # the feed's last position
    lag: int  # events stored after ``position`` (counted up to LAG_COUNTED_UP_TO)
    stopped_at: int | None
    stopped_topic: str | None
    error: str | None  # why it stopped, or (without stopped_at) why its runner cannot run
    parked: list[Parked] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.stopped_at is not None:
            return "stopped"
        return "cannot run" if self.error else "running"

    def as_json(self) -> dict[str, Any]:
        return {
            "projection": self.name,
            "state": self.state,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "stopped_at": self.stopped_at,
            "stopped_topic": self.stopped_topic,
            "error": self.error,
            "parked": [p.__dict__ for p in self.parked],
        }


def status(app: Application) -> list[ProjectionStatus]:
    """Every projection of ``app``, in the order it declares them."""
    names = [projection.name for projection in projection_classes(app)]
    store = feed_store(app, "uwsgi-es status")
    head = store.last_position()
    with store.engine.connect() as connection:
        tracked = read(connection, names)
        parked = _parked_events(connection, names)
    return [
        ProjectionStatus(
            name,
            t.position,
            head,
            store.count_after(t.position, LAG_COUNTED_UP_TO),
            t.error_position,
            t.error_topic,
            t.error,
            parked.get(name, []),
        )
        for name, t in tracked.items()
    ]


def park(app: Application, name: str) -> Parked:
    """Set aside the event the projection ``name`` is stopped at, so that it goes on after it."""
    projection_named(app, name)  # an unknown name is refused, listing the known ones
    store = feed_store(app, "uwsgi-es park")
    with store.write_transaction() as connection:
        position = lock(connection, name)
        tracked = read(connection, [name])[name]
        if tracked.error_position is None or tracked.error_topic is None:
            raise ProjectionOperationError(
                f"The projection {name!r} is not stopped at an event (it is at position {position}"
                f"{'; its runner cannot run: ' + tracked.error if tracked.error else ''}): there is "
                "nothing to park. `uwsgi-es status` shows each projection's state."
            )
        parked = Parked(tracked.error_position, tracked.error_topic, tracked.error or "", time.time())
        connection.execute(insert(parked_table).values(projection=name, **parked.__dict__))
        # Its runner stopped after applying every event before this one: the position moves to it.
        advance(connection, name, parked.position)
    return parked


def replay(app: Application, name: str, position: int) -> None:
    """Apply the event parked for ``name`` at ``position`` now, and forget it; when it fails
    again, nothing changes (``ProjectionOperationError`` naming the error)."""
    projection = projection_named(app, name)()
    store = feed_store(app, "uwsgi-es replay")
    with store.write_transaction() as connection:
        lock(connection, name)
        _forget(connection, name, position)
        event = _event_at(connection, position)
        try:
            projection.process_batch([(event, position)], connection)
        except Exception as exc:
            raise ProjectionOperationError(
                f"Replaying the event at position {position} for the projection {name!r} failed "
                f"again: {type(exc).__name__}: {exc}. It stays parked; fix the projection's code "
                "and replay it again."
            ) from exc


def reset(app: Application, name: str) -> int:
    """Empty the projection's read model and move it back to the first event (its runner then
    rebuilds it); returns the rows deleted."""
    projection = projection_named(app, name)
    store = feed_store(app, "uwsgi-es reset")
    with store.write_transaction() as connection:
        lock(connection, name)
        deleted = _empty(connection, projection)
        connection.execute(delete(parked_table).where(_parked.projection == name))
        advance(connection, name, 0)
    return deleted


def _empty(connection: Connection, projection: type[Projection]) -> int:
    deleted = 0
    for table in reversed(projection.metadata.sorted_tables):  # dependent tables first
        deleted += connection.execute(delete(table)).rowcount
    return deleted


def _parked_events(connection: Connection, names: list[str]) -> dict[str, list[Parked]]:
    rows = connection.execute(
        select(parked_table).where(_parked.projection.in_(names)).order_by(_parked.position)
    ).all()
    found: dict[str, list[Parked]] = {}
    for row in rows:
        found.setdefault(row.projection, []).append(Parked(row.position, row.topic, row.error, row.parked_at))
    return found


def _forget(connection: Connection, name: str, position: int) -> None:
    """Delete the parked row, or refuse naming the parked positions there are."""
    removed = connection.execute(
        delete(parked_table).where(_parked.projection == name, _parked.position == position)
    ).rowcount
    if removed == 1:
        return
    parked = [p.position for p in _parked_events(connection, [name]).get(name, [])]
    raise ProjectionOperationError(
        f"No event is parked for the projection {name!r} at position {position}; parked there: "
        f"{', '.join(map(str, parked)) or 'none'}."
    )


def _event_at(connection: Connection, position: int) -> Any:
    columns = (
        records_table.c.originator_id,
        records_table.c.originator_version,
        records_table.c.topic,
        records_table.c.state,
        records_table.c.id,
    )
    row = connection.execute(select(*columns).where(records_table.c.id == position)).one()
    try:
        return EventStore.from_record(StoredRecord(*row))
    except UnreadableEventError as exc:
        raise ProjectionOperationError(f"{exc} It stays parked.") from exc
