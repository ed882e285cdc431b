"""Moved to ``uwsgi_es.example.domain``; these names still work from here."""

from __future__ import annotations

from uwsgi_es.example.domain import (
    MAX_AMOUNT,
    MAX_BALANCE,
    MAX_OWNER_LENGTH,
    BalanceLimitError,
    BankAccount,
    BankAccounts,
    InsufficientFundsError,
)

__all__ = [
    "MAX_AMOUNT",
    "MAX_BALANCE",
    "MAX_OWNER_LENGTH",
    "BalanceLimitError",
    "BankAccount",
    "BankAccounts",
    "InsufficientFundsError",
]
