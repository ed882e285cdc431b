"""The read-side runners' LISTEN connections, as PostgreSQL sees them (for fault injection)."""

from __future__ import annotations

from sqlalchemy import Engine, text

from uwsgi_es.readside.waking import LISTENER_NAME

_ON_THIS_DATABASE = "FROM pg_stat_activity WHERE application_name = :name AND datname = current_database()"


def terminate_listeners(engine: Engine) -> list[bool]:
    """pg_terminate_backend on every runner's LISTEN connection to this database."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT pg_terminate_backend(pid) " + _ON_THIS_DATABASE),
            {"name": LISTENER_NAME},
        )
        return [bool(row[0]) for row in rows]


def count_listeners(engine: Engine) -> int:
    """How many runners are listening on this database right now."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) " + _ON_THIS_DATABASE),
                {"name": LISTENER_NAME},
            ).scalar_one()
        )
