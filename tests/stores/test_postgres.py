"""The record-store contract on a real PostgreSQL server (started by the tests), plus its own rules."""

from __future__ import annotations

from uuid import uuid4

import pytest
from sqlalchemy import text

from uwsgi_es.errors import SchemaMissingError, StoreUnavailableError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.testing import PostgresServer
from uwsgi_es.testing.postgres import ExistingPostgres

from .contract import records
from .sqlalchemy_contract import SQLAlchemyStoreContract

pytestmark = pytest.mark.postgres


class TestPostgresStore(SQLAlchemyStoreContract):
    @pytest.fixture
    def database_url(self, postgres_url: str) -> str:
        return postgres_url


def test_pool_settings_reach_the_engine(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url, pool_size=3, max_overflow=2, pool_timeout=1.5)
    store = SQLAlchemyRecordStore.from_settings(settings)
    pool = store.engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 2, 1.5)  # type: ignore[attr-defined]
    assert pool._pre_ping is True
    store.close()


def test_unmigrated_database_says_to_migrate(postgres: PostgresServer | ExistingPostgres) -> None:
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres.create_database("unmigrated")))
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.ping()
    store.close()


def test_unreachable_server_is_unavailable_within_the_connect_timeout(
    postgres: PostgresServer | ExistingPostgres,
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port + 1}/nowhere"
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=url, connect_timeout=2))
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1"):
        store.ping()
    store.close()


def test_writers_hold_the_append_lock_only_inside_their_transaction(postgres_url: str) -> None:
    """The feed's lock queues writers, never readers, and is gone when the append ends."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres_url))
    store.append(records(uuid4(), range(1, 2)))
    with store.engine.connect() as connection:
        held = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE mode = 'ExclusiveLock' AND relation IS NOT NULL")
        ).scalar()
    assert held == 0
    store.close()
