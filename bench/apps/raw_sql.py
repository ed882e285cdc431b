"""The write/read anchor: SQLAlchemy Core, one INSERT per deposit, SELECT-and-SUM per read.

No events, no aggregates, no validation beyond what a careful hand-written app would do. Same
database settings as uwsgi_es: UWSGI_ES_DATABASE_URL, SQLite in WAL mode with synchronous=FULL.
The engine is created per process on first use (after the fork).
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    Uuid,
    create_engine,
    event,
    func,
    insert,
    select,
)

from bench.apps import account_routes

metadata = MetaData()
deposits = Table(
    "raw_deposits",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("account_id", Uuid(), nullable=False, index=True),
    Column("amount", BigInteger(), nullable=False),
)

_engine: tuple[int, Engine] | None = None


def engine() -> Engine:
    global _engine
    if _engine is None or _engine[0] != os.getpid():
        url = os.environ["UWSGI_ES_DATABASE_URL"]
        created = create_engine(url)
        if created.dialect.name == "sqlite":

            @event.listens_for(created, "connect")
            def pragmas(connection: Any, _: Any) -> None:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                connection.execute("PRAGMA busy_timeout=5000")

        _engine = (os.getpid(), created)
    return _engine[1]


def deposit(account: UUID, amount: int) -> tuple[str, Any]:
    with engine().begin() as connection:
        connection.execute(insert(deposits).values(account_id=account, amount=amount))
    return "200 OK", {"id": str(account), "amount": amount}


def read(account: UUID) -> Any:
    with engine().connect() as connection:
        total, count = connection.execute(
            select(func.coalesce(func.sum(deposits.c.amount), 0), func.count()).where(
                deposits.c.account_id == account
            )
        ).one()
    return {"id": str(account), "balance": int(total), "version": int(count) + 1}


application = account_routes(deposit, read)


def create_schema(url: str) -> None:
    created = create_engine(url)
    metadata.create_all(created)
    created.dispose()
