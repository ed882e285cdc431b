"""The bank's read model: a ``balances`` table (account, owner, balance, version), kept by a
projection that a uWSGI mule runs (uwsgi.ini), and queried by ``GET /balances``.

It answers what the event store cannot answer cheaply: the largest balances across all accounts.
Its rows change through the runner's connection, in the transaction that also records the
position, so the table always equals a fold of the events up to that position. A batch of events
costs two statements whatever its size (the accounts opened in it, inserted at once; each other
account's net change, updated at once): the runner keeps up with writers committing in parallel.
It declares the events it handles, so the events of any other application sharing the database
are passed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    Uuid,
    bindparam,
    insert,
    select,
    update,
)

from uwsgi_es.domain import DomainEvent
from uwsgi_es.example.domain import BankAccount
from uwsgi_es.readside import Projection

metadata = MetaData()
balances_table = Table(
    "balances",
    metadata,
    Column("account_id", Uuid(), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("balance", BigInteger(), nullable=False, index=True),
    Column("version", BigInteger(), nullable=False),
)
_c = balances_table.c
# One account's net change over a batch and its version at the batch's end.
_ADD_CHANGE = (
    update(balances_table)
    .where(_c.account_id == bindparam("key"))
    .values(balance=_c.balance + bindparam("change", type_=BigInteger()), version=bindparam("version"))
)


class Balances(Projection):
    name: ClassVar[str] = "balances"
    metadata: ClassVar[MetaData] = metadata
    handles: ClassVar[tuple[type[DomainEvent], ...]] = (
        BankAccount.Opened,
        BankAccount.Deposited,
        BankAccount.Withdrawn,
    )

    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        if isinstance(event, BankAccount.Opened):
            connection.execute(
                insert(balances_table).values(
                    account_id=event.originator_id,
                    owner=event.owner,
                    balance=0,
                    version=event.originator_version,
                )
            )
        elif isinstance(event, BankAccount.Deposited | BankAccount.Withdrawn):
            change = event.amount if isinstance(event, BankAccount.Deposited) else -event.amount
            connection.execute(
                update(balances_table)
                .where(_c.account_id == event.originator_id)
                .values(balance=_c.balance + change, version=event.originator_version)
            )

    def process_batch(self, events: Sequence[tuple[DomainEvent, int]], connection: Connection) -> None:
        """As ``process`` for each event, in two statements: the accounts opened in the batch, with
        their balance at its end, inserted; every other account's net change and last version,
        updated (an executemany: one round trip on psycopg, which pipelines it)."""
        opened: dict[UUID, dict[str, Any]] = {}
        changed: dict[UUID, dict[str, Any]] = {}
        for event, _ in events:
            account = event.originator_id
            if isinstance(event, BankAccount.Opened):
                version = event.originator_version
                opened[account] = {
                    "account_id": account,
                    "owner": event.owner,
                    "balance": 0,
                    "version": version,
                }
                continue
            if not isinstance(event, BankAccount.Deposited | BankAccount.Withdrawn):
                continue
            row = opened.get(account) or changed.setdefault(account, {"key": account, "change": 0})
            amount = event.amount if isinstance(event, BankAccount.Deposited) else -event.amount
            row["balance" if account in opened else "change"] += amount
            row["version"] = event.originator_version
        if opened:
            connection.execute(insert(balances_table), list(opened.values()))
        if changed:
            connection.execute(_ADD_CHANGE, list(changed.values()))

    @staticmethod
    def top(connection: Connection, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` largest balances, largest first."""
        rows = connection.execute(
            select(balances_table).order_by(_c.balance.desc(), _c.account_id).limit(limit)
        ).all()
        return [_as_dict(row) for row in rows]

    @staticmethod
    def one(connection: Connection, account_id: UUID) -> dict[str, Any] | None:
        row = connection.execute(select(balances_table).where(_c.account_id == account_id)).first()
        return _as_dict(row) if row is not None else None


def _as_dict(row: Any) -> dict[str, Any]:
    return {"id": str(row.account_id), "owner": row.owner, "balance": row.balance, "version": row.version}
