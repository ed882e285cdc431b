"""The read side's faults contract (tables missing, a database failing, another application's
events) on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import pytest

from .readside_faults_contract import ReadSideFaultsContract


class TestReadSideFaultsOnSQLite(ReadSideFaultsContract):
    @pytest.fixture
    def database_url(self, sqlite_url: str) -> str:
        return sqlite_url


@pytest.mark.postgres
class TestReadSideFaultsOnPostgres(ReadSideFaultsContract):
    @pytest.fixture
    def database_url(self, postgres_url: str) -> str:
        return postgres_url
