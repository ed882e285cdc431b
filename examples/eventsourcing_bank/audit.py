"""The bank's audit trail, a process application of the eventsourcing library: it follows the bank's
notification log and records one ``AuditEntry`` per money movement, in its own event store, in the
same transaction as its tracking record (the library's ``EventSourcedProjection``), so each bank
event yields exactly one entry, however often its mule is killed.

Deployed by uwsgi_es in a uWSGI mule: add it to ``UWSGI_ES_PROJECTIONS`` as
``examples.eventsourcing_bank.audit:Audit``. Its store is its own (the library's settings under the
prefix ``AUDIT_``: on SQLite a file of its own, ``AUDIT_SQLITE_DBNAME``, since the library's SQLite
tables are not named after the application; on PostgreSQL its tables are ``audit_events`` and
``audit_tracking``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.projection import EventSourcedProjection
from eventsourcing.utils import get_topic

from examples.eventsourcing_bank.domain import BankAccount


class AuditEntry(Aggregate):
    """One money movement of one account, as the bank's log says it happened."""

    @event("Recorded")
    def __init__(self, account_id: UUID, movement: str, amount: int, position: int) -> None:
        self.account_id = account_id
        self.movement = movement
        self.amount = amount
        self.position = position


class Audit(EventSourcedProjection[UUID]):
    name = "audit"
    topics = tuple(get_topic(cls) for cls in (BankAccount.Deposited, BankAccount.Withdrawn))

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[Any], processing_event: ProcessingEvent[UUID]) -> None:
        """Other events: nothing to record (the tracking record still moves past them)."""

    @policy.register
    def _(self, domain_event: BankAccount.Deposited, processing_event: ProcessingEvent[UUID]) -> None:
        self._entry(domain_event, "deposit", processing_event)

    @policy.register
    def _(self, domain_event: BankAccount.Withdrawn, processing_event: ProcessingEvent[UUID]) -> None:
        self._entry(domain_event, "withdrawal", processing_event)

    def _entry(self, domain_event: Any, movement: str, processing_event: ProcessingEvent[UUID]) -> None:
        position = processing_event.tracking.notification_id if processing_event.tracking else 0
        entry = AuditEntry(domain_event.originator_id, movement, domain_event.amount, position)
        processing_event.collect_events(entry)
