"""The library anchor: the same bank account written with the `eventsourcing` library (v9).

Served by the same uWSGI settings as uwsgi_es. One application per process, built on first use
after the fork. Persistence from the library's own environment variables (PERSISTENCE_MODULE,
SQLITE_DBNAME or POSTGRES_*), set by the benchmark driver.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.apps import account_routes


class BankAccount(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount


class BankAccounts(Application[UUID]):
    def open_account(self, owner: str) -> UUID:
        account = BankAccount(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: int) -> BankAccount:
        account: BankAccount = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)
        return account


_app: tuple[int, BankAccounts] | None = None


def app() -> BankAccounts:
    global _app
    if _app is None or _app[0] != os.getpid():
        _app = (os.getpid(), BankAccounts())
    return _app[1]


def deposit(account_id: UUID, amount: int) -> tuple[str, Any]:
    return "200 OK", summary(app().deposit(account_id, amount))


def read(account_id: UUID) -> Any:
    return summary(app().repository.get(account_id))


def summary(account: BankAccount) -> dict[str, Any]:
    return {"id": str(account.id), "balance": account.balance, "version": account.version}


application = account_routes(deposit, read, open_account=lambda: {"id": str(app().open_account("bench"))})
