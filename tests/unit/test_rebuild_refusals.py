"""What `uwsgi-es rebuild` refuses before it touches a database, each with the fix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table

from uwsgi_es.domain import DomainEvent
from uwsgi_es.errors import ProjectionOperationError, ReadSideUnavailableError
from uwsgi_es.example.balances import Balances
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.readside import Projection
from uwsgi_es.readside.rebuild import rebuild
from uwsgi_es.settings import Settings

elsewhere = MetaData()
Table("counted", elsewhere, Column("n", Integer, primary_key=True), schema="reports")


class InAnotherSchema(Projection):
    name: ClassVar[str] = "in_another_schema"
    metadata: ClassVar[MetaData] = elsewhere

    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        pass


class Bank(BankAccounts):
    projections: ClassVar[Any] = (Balances, InAnotherSchema)


@pytest.fixture
def app() -> Iterator[Bank]:
    with Bank.from_settings(Settings(database_url="sqlite://")) as app:
        yield app


def test_a_table_with_its_own_schema_is_refused_naming_it(app: Bank) -> None:
    with pytest.raises(ProjectionOperationError, match=r"names a schema for reports\.counted"):
        rebuild(app, "in_another_schema")


def test_sqlite_in_memory_has_no_room_for_a_second_model_and_says_to_reset(app: Bank) -> None:
    with pytest.raises(ProjectionOperationError, match=r"SQLite in memory\): use `uwsgi-es reset"):
        rebuild(app, "balances")


def test_an_unknown_projection_is_refused_naming_the_known_ones(app: Bank) -> None:
    with pytest.raises(
        ReadSideUnavailableError, match=r"no projection named 'balance' \(its projections: balances, in_an"
    ):
        rebuild(app, "balance")
