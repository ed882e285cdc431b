"""The project's files the tests launch."""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent.parent
INI = PROJECT / "uwsgi.ini"
POSTGRES_INI = PROJECT / "deploy" / "uwsgi-postgres.ini"
CASSANDRA_INI = PROJECT / "deploy" / "uwsgi-cassandra.ini"
