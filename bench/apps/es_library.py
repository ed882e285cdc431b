"""The library anchor: the same bank account written with the `eventsourcing` library (v9).

Served by the same uWSGI settings as uwsgi_es. One application per process, built on first use
after the fork. Persistence from the library's own environment variables (PERSISTENCE_MODULE,
SQLITE_DBNAME or POSTGRES_*), set by the benchmark driver.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.apps import respond

ROUTE = re.compile(r"^/accounts/([0-9a-f-]{36})(/deposits)?$")


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


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/health":
        return respond(start_response, "200 OK", {"status": "ok"})
    if path == "/accounts" and environ["REQUEST_METHOD"] == "POST":
        return respond(start_response, "201 Created", {"id": str(app().open_account("bench"))})
    match = ROUTE.match(path)
    if not match:
        return respond(start_response, "404 Not Found", {"error": "no route"})
    account_id = UUID(match.group(1))
    if match.group(2):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        amount = json.loads(environ["wsgi.input"].read(length))["amount"]
        account = app().deposit(account_id, amount)
    else:
        account = app().repository.get(account_id)
    return respond(
        start_response,
        "200 OK",
        {"id": str(account.id), "balance": account.balance, "version": account.version},
    )
