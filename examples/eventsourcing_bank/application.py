"""The application: commands that load, change and save an account, retried on a conflict with
another worker (``retry_on_conflict``), and a snapshot every 10 events (the library's own)."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError as LibraryNotFound
from eventsourcing.application import Application

from examples.eventsourcing_bank.domain import BankAccount
from uwsgi_es.errors import AggregateNotFoundError
from uwsgi_es.integrations.eventsourcing import retry_on_conflict


class BankAccounts(Application[UUID]):
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {BankAccount: 10}

    def open_account(self, owner: str) -> BankAccount:
        account = BankAccount(owner)
        self.save(account)
        return account

    def get_account(self, account_id: UUID) -> BankAccount:
        try:
            account = self.repository.get(account_id)
        except LibraryNotFound:
            raise AggregateNotFoundError(f"No BankAccount with id {account_id} is stored.") from None
        if not isinstance(account, BankAccount):
            raise AggregateNotFoundError(f"No BankAccount with id {account_id} is stored.")
        return account

    @retry_on_conflict
    def deposit(self, account_id: UUID, amount: int) -> BankAccount:
        account = self.get_account(account_id)
        account.deposit(amount)
        self.save(account)
        return account

    @retry_on_conflict
    def withdraw(self, account_id: UUID, amount: int) -> BankAccount:
        account = self.get_account(account_id)
        account.withdraw(amount)
        self.save(account)
        return account
