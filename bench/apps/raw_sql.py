"""The write/read anchor: SQLAlchemy Core, one INSERT per deposit, SELECT-and-SUM per read.

No events, no aggregates, no validation beyond what a careful hand-written app would do. Same
database settings as uwsgi_es: UWSGI_ES_DATABASE_URL, SQLite in WAL mode with synchronous=FULL.
The engine is created per process on first use (after the fork).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
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

from bench.apps import respond

metadata = MetaData()
deposits = Table(
    "raw_deposits",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("account_id", Uuid(), nullable=False, index=True),
    Column("amount", BigInteger(), nullable=False),
)

ROUTE = re.compile(r"^/accounts/([0-9a-f-]{36})(/deposits)?$")
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


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/health":
        return respond(start_response, "200 OK", {"status": "ok"})
    match = ROUTE.match(path)
    if not match:
        return respond(start_response, "404 Not Found", {"error": "no route"})
    account = UUID(match.group(1))
    if match.group(2) and environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        amount = json.loads(environ["wsgi.input"].read(length))["amount"]
        with engine().begin() as connection:
            connection.execute(insert(deposits).values(account_id=account, amount=amount))
        return respond(start_response, "200 OK", {"id": str(account), "amount": amount})
    with engine().connect() as connection:
        total, count = connection.execute(
            select(func.coalesce(func.sum(deposits.c.amount), 0), func.count()).where(
                deposits.c.account_id == account
            )
        ).one()
    return respond(
        start_response, "200 OK", {"id": str(account), "balance": int(total), "version": int(count) + 1}
    )


def create_schema(url: str) -> None:
    created = create_engine(url)
    metadata.create_all(created)
    created.dispose()
