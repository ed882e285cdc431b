"""Tracking records: for each projection, the feed position it has applied, in the
``uwsgi_es_tracking`` table of the store's own database, and what keeps it from going on:

- **stopped** at an event (``error_position``, ``error_topic``, ``error`` set): that event cannot be
  processed; cleared when the projection passes it;
- **cannot run** (``error`` set, ``error_position`` NULL): its runner keeps failing for a reason that
  is not an event's (the database, a missing table); cleared when the runner makes progress.

The position is written in the same transaction as the projection's read model, so the two never
disagree. A runner locks its row first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already admits one writer): two runners of one projection by mistake (a mule
and ``uwsgi-es project``) take turns and never apply an event twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from uwsgi_es.stores.sqlalchemy.schema import tracking_table

_table = tracking_table
_columns = _table.c


@dataclass(frozen=True)
class Tracked:
    """What a projection's tracking record says."""

    projection: str
    position: int
    error_position: int | None = None
    error_topic: str | None = None
    error: str | None = None


def _insert_if_missing(connection: Connection, projection: str) -> None:
    values = {"projection": projection, "position": 0}
    # The dialect's own INSERT (for ON CONFLICT), imported here: a SQLite worker never loads
    # PostgreSQL's dialect.
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        connection.execute(postgresql.insert(_table).values(values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects import sqlite

        connection.execute(sqlite.insert(_table).values(values).on_conflict_do_nothing())


def lock(connection: Connection, projection: str) -> int:
    """The projection's position, its row locked until the transaction ends (made at 0 if new)."""
    statement = select(_columns.position).where(_columns.projection == projection)
    if connection.dialect.name == "postgresql":
        statement = statement.with_for_update()
    position = connection.execute(statement).scalar()
    if position is None:
        _insert_if_missing(connection, projection)
        position = connection.execute(statement).scalar_one()
    return int(position)


def advance(connection: Connection, projection: str, position: int) -> None:
    """Record that the projection applied everything up to ``position``; it is no longer stopped."""
    connection.execute(
        update(_table)
        .where(_columns.projection == projection)
        .values(position=position, error_position=None, error_topic=None, error=None)
    )


def record_stop(connection: Connection, projection: str, position: int, topic: str, error: str) -> None:
    """Record the event the projection stopped at (its position stays before it)."""
    lock(connection, projection)
    connection.execute(
        update(_table)
        .where(_columns.projection == projection)
        .values(error_position=position, error_topic=topic[:255], error=error)
    )


def record_trouble(connection: Connection, projection: str, error: str) -> None:
    """Record why the projection's runner cannot run (unless it is stopped at an event: that says
    more, and stays)."""
    lock(connection, projection)
    connection.execute(
        update(_table)
        .where(_columns.projection == projection, _columns.error_position.is_(None))
        .values(error=error)
    )


def clear_trouble(connection: Connection, projection: str) -> None:
    """The runner runs again: forget why it could not (a stop stays)."""
    connection.execute(
        update(_table)
        .where(_columns.projection == projection, _columns.error_position.is_(None))
        .values(error=None)
    )


def read(connection: Connection, projections: Sequence[str]) -> dict[str, Tracked]:
    """The tracking records of ``projections`` (those never run are at 0)."""
    rows = connection.execute(select(_table).where(_columns.projection.in_(projections))).all()
    found = {
        row.projection: Tracked(
            row.projection, int(row.position), row.error_position, row.error_topic, row.error
        )
        for row in rows
    }
    return {name: found.get(name, Tracked(name, 0)) for name in projections}
