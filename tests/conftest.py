"""Shared fixtures: a clean environment, a migrated SQLite file, and a clean registry per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from uwsgi_es import close_application
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No UWSGI_ES_* setting of the developer's shell leaks into a test; no application outlives it."""
    for name in list(os.environ):
        if name.startswith("UWSGI_ES_"):
            monkeypatch.delenv(name)
    yield
    close_application()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file database with the schema created, as `uwsgi-es migrate` would."""
    url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=url))
    store.create_schema()
    store.close()
    return url


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return Settings(database_url=sqlite_url)
