"""The record-store contract plus what SQLAlchemy stores add: a view's own session and transaction.

``test_sqlite`` and ``test_postgres`` subclass it and provide a ``database_url`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import UUID, uuid4

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from uwsgi_es.errors import ConcurrencyError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import RecordStore
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore, records_table
from uwsgi_es.stores.sqlalchemy.schema import INSERT_PG, POSITIONS_PER_TRANSACTION

from .contract import RecordStoreContract, records


def view_inserts(session: Session, originator: UUID, version: int) -> None:
    """What a view might do in the request's session before it calls the application (here, an
    event of its own: what lands in the events table is easy to check)."""
    if session.get_bind().dialect.name == "postgresql":  # a place the store's appends do not claim
        columns = {"originator_ids": [originator], "originator_versions": [version], "topics": ["view"]}
        session.execute(INSERT_PG, {**columns, "states": ["{}"], "first": POSITIONS_PER_TRANSACTION - 1})
    else:
        values = {"originator_id": originator, "originator_version": version, "topic": "view", "state": "{}"}
        session.execute(insert(records_table).values(values))


class SQLAlchemyStoreContract(RecordStoreContract):
    """Not collected itself (no Test prefix)."""

    @pytest.fixture
    def make_store(self, database_url: str) -> Callable[[], RecordStore]:
        return lambda: SQLAlchemyRecordStore.from_settings(Settings(database_url=database_url))

    @pytest.fixture
    def store(self, make_store: Callable[[], RecordStore]) -> Iterator[SQLAlchemyRecordStore]:
        store = make_store()
        assert isinstance(store, SQLAlchemyRecordStore)
        yield store
        store.close()

    def test_appends_join_the_transaction_a_view_opened(self, store: SQLAlchemyRecordStore) -> None:
        """The view's work and the events commit together, or neither is stored."""
        rolled_back, committed = uuid4(), uuid4()
        session = store.sessions()
        view_inserts(session, rolled_back, 1)
        store.append(records(rolled_back, range(2, 4)))
        session.rollback()
        assert store.select(rolled_back) == []

        view_inserts(session, committed, 1)
        store.append(records(committed, range(2, 4)))
        session.commit()
        assert [(r.originator_version, r.topic) for r in store.select(committed)] == [
            (1, "view"),
            (2, "tests:Event"),
            (3, "tests:Event"),
        ]
        store.end_request()
        assert store.pool_status()["checked_out"] == 0

    def test_a_conflict_inside_a_view_transaction_undoes_only_the_batch(
        self, store: SQLAlchemyRecordStore
    ) -> None:
        """The savepoint rolls back the refused batch; the view's own work can still commit."""
        originator = uuid4()
        session = store.sessions()
        view_inserts(session, originator, 1)
        with pytest.raises(ConcurrencyError):
            store.append(records(originator, range(1, 3)))
        session.commit()
        assert [(r.originator_version, r.topic) for r in store.select(originator)] == [(1, "view")]
        store.end_request()

    def test_store_statements_make_no_session(self, store: SQLAlchemyRecordStore) -> None:
        """Outside a view's transaction the store uses a connection for one transaction only."""
        originator = uuid4()
        store.append(records(originator, range(1, 3)))
        assert len(store.select(originator)) == 2
        assert store.pool_status()["checked_out"] == 0
        assert store.datastore._sessions is None  # no ORM session was made
