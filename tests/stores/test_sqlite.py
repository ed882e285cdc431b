"""The record-store contract on SQLite (a WAL file), plus SQLite's own rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from uwsgi_es.errors import SchemaMissingError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore

from .sqlalchemy_contract import SQLAlchemyStoreContract


class TestSQLiteStore(SQLAlchemyStoreContract):
    @pytest.fixture
    def database_url(self, sqlite_url: str) -> str:
        return sqlite_url


def test_file_database_uses_wal_and_a_busy_timeout(sqlite_url: str) -> None:
    store = SQLAlchemyRecordStore.from_settings(
        Settings(database_url=sqlite_url, sqlite_busy_timeout_ms=1234)
    )
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    store.close()


def test_missing_database_file_says_to_migrate(tmp_path: Path) -> None:
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=f"sqlite:///{tmp_path}/none/x.sqlite3"))
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.ping()
    assert not (tmp_path / "none").exists()  # a worker never creates the file or folder
