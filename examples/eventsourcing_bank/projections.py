"""The bank's read side, written with the eventsourcing library: every account's balance, kept by a
library ``Projection`` in a materialised view (a ``TrackingRecorder`` that writes the balance and
its tracking record in one transaction, so each event counts exactly once).

Deployed by uwsgi_es in a uWSGI mule (``deploy/uwsgi-eventsourcing.ini``), named by
``UWSGI_ES_PROJECTIONS``, one view class per persistence module:

    UWSGI_ES_PROJECTIONS=examples.eventsourcing_bank.projections:Balances=examples.eventsourcing_bank.projections:SqliteBalancesView
    UWSGI_ES_PROJECTIONS=examples.eventsourcing_bank.projections:Balances=examples.eventsourcing_bank.postgres_views:PostgresBalancesView
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import get_topic

from examples.eventsourcing_bank.domain import BankAccount

TABLE = "account_balances"


class BalancesView(TrackingRecorder, ABC):
    """The balances, and the position of the last event they include."""

    @abstractmethod
    def opened(self, account_id: UUID, owner: str, tracking: Tracking) -> None: ...

    @abstractmethod
    def changed(self, account_id: UUID, delta: int, tracking: Tracking) -> None: ...

    @abstractmethod
    def balance_of(self, account_id: UUID) -> dict[str, Any] | None: ...


class Balances(Projection[BalancesView]):
    """Opened sets a balance of 0; Deposited and Withdrawn change it."""

    name = "balances"
    topics = tuple(
        get_topic(cls) for cls in (BankAccount.Opened, BankAccount.Deposited, BankAccount.Withdrawn)
    )

    @singledispatchmethod
    def process_event(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)  # an event of no interest: only the position moves

    @process_event.register
    def _(self, domain_event: BankAccount.Opened, tracking: Tracking) -> None:
        self.view.opened(domain_event.originator_id, domain_event.owner, tracking)

    @process_event.register
    def _(self, domain_event: BankAccount.Deposited, tracking: Tracking) -> None:
        self.view.changed(domain_event.originator_id, domain_event.amount, tracking)

    @process_event.register
    def _(self, domain_event: BankAccount.Withdrawn, tracking: Tracking) -> None:
        self.view.changed(domain_event.originator_id, -domain_event.amount, tracking)


class SqliteBalancesView(SQLiteTrackingRecorder, BalancesView):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS account_balances (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
            "balance INTEGER NOT NULL, position INTEGER NOT NULL)",
        ]

    def opened(self, account_id: UUID, owner: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "INSERT INTO account_balances VALUES (?, ?, 0, ?)",
                (str(account_id), owner, tracking.notification_id),
            )
            self._insert_tracking(cursor, tracking)

    def changed(self, account_id: UUID, delta: int, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "UPDATE account_balances SET balance = balance + ?, position = ? WHERE id = ?",
                (delta, tracking.notification_id, str(account_id)),
            )
            self._insert_tracking(cursor, tracking)

    def balance_of(self, account_id: UUID) -> dict[str, Any] | None:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT id, owner, balance, position FROM account_balances WHERE id = ?", (str(account_id),)
            )
            row = cursor.fetchone()
        return (
            None
            if row is None
            else dict(zip(("id", "owner", "balance", "position"), tuple(row), strict=True))
        )
