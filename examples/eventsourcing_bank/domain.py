"""A bank account as the eventsourcing library models it: methods decorated with ``@event`` trigger
and apply the events. Amounts are whole cents."""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event

from uwsgi_es.errors import CommandRejectedError


class InsufficientFundsError(CommandRejectedError):
    """A withdrawal larger than the balance (a refusal: 409, nothing stored)."""


class BankAccount(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFundsError(
                f"insufficient funds: account {self.id} holds {self.balance}, cannot withdraw {amount}"
            )
        self._withdrawn(amount)

    @event("Withdrawn")
    def _withdrawn(self, amount: int) -> None:
        self.balance -= amount

    def as_dict(self) -> dict[str, object]:
        return {"id": str(self.id), "owner": self.owner, "balance": self.balance, "version": self.version}
