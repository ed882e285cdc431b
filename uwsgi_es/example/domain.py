"""The example domain: bank accounts whose balance is the sum of their events (amounts in cents).

It shows the shape of a user's own model: an ``Aggregate`` with nested event classes, command
methods that check rules before triggering events, and an ``Application`` subclass whose commands
load, change and save inside ``self.command`` so a concurrency conflict is retried on fresh state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from uwsgi_es.application import Application
from uwsgi_es.domain import Aggregate, register_topic, topic_of
from uwsgi_es.errors import CommandRejectedError

MAX_AMOUNT = 100_000_000_000  # one billion in cents: larger single movements are refused
MAX_BALANCE = 10**15  # keeps every balance an exact 64-bit integer for any JSON reader
MAX_OWNER_LENGTH = 200


class InsufficientFundsError(CommandRejectedError):
    """A withdrawal larger than the balance."""


class BalanceLimitError(CommandRejectedError):
    """A deposit that would take the balance past ``MAX_BALANCE``."""


class BankAccount(Aggregate):
    owner: str
    balance: int

    @dataclass(frozen=True)
    class Opened(Aggregate.Created):
        owner: str

        def apply(self, account: Any) -> None:
            account.owner = self.owner
            account.balance = 0

    @dataclass(frozen=True)
    class Deposited(Aggregate.Event):
        amount: int

        def apply(self, account: Any) -> None:
            account.balance += self.amount

    @dataclass(frozen=True)
    class Withdrawn(Aggregate.Event):
        amount: int

        def apply(self, account: Any) -> None:
            account.balance -= self.amount

    @classmethod
    def open(cls, owner: str) -> BankAccount:
        return cls.create_from(cls.Opened, owner=owner)

    def deposit(self, amount: int) -> None:
        if self.balance + amount > MAX_BALANCE:
            raise BalanceLimitError(
                f"a deposit of {amount} would take the balance of {self.id} past the limit of {MAX_BALANCE}"
            )
        self.trigger_event(self.Deposited, amount=amount)

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFundsError(
                f"insufficient funds: account {self.id} holds {self.balance}, cannot withdraw {amount}"
            )
        self.trigger_event(self.Withdrawn, amount=amount)

    def as_dict(self) -> dict[str, Any]:
        return {"id": str(self.id), "owner": self.owner, "balance": self.balance, "version": self.version}


class BankAccounts(Application):
    """The example application: open accounts, move money, read them back. Its read model, the
    balances of every account, is kept by a projection (run in a uWSGI mule: uwsgi.ini)."""

    projections: ClassVar[Sequence[type[Any] | str]] = ("uwsgi_es.example.balances:Balances",)

    def open_account(self, owner: str) -> BankAccount:
        account = BankAccount.open(owner)
        self.save(account)
        return account

    def get_account(self, account_id: UUID) -> BankAccount:
        return self.get(account_id, BankAccount)

    def deposit(self, account_id: UUID, amount: int) -> BankAccount:
        return self._change(account_id, lambda account: account.deposit(amount))

    def withdraw(self, account_id: UUID, amount: int) -> BankAccount:
        return self._change(account_id, lambda account: account.withdraw(amount))

    def _change(self, account_id: UUID, change: Callable[[BankAccount], None]) -> BankAccount:
        def run() -> BankAccount:
            account = self.get_account(account_id)
            change(account)
            self.save(account)
            return account

        return self.command(run)


# This module was uwsgi_es.bank: events stored then name their classes by the old topics.
for _cls in (BankAccount, BankAccount.Opened, BankAccount.Deposited, BankAccount.Withdrawn):
    register_topic(topic_of(_cls).replace("uwsgi_es.example.domain:", "uwsgi_es.bank:"), _cls)
