"""A process application of the eventsourcing library following the library-written bank: one
``Notice`` per withdrawal (tests/unit/test_library_projections.py runs it as a runner mule does)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.system import ProcessApplication

from examples.eventsourcing_bank.domain import BankAccount


class Notice(Aggregate):
    @event("Sent")
    def __init__(self, account_id: UUID, amount: int) -> None:
        self.account_id = account_id
        self.amount = amount


class Notices(ProcessApplication[UUID]):
    name = "notices"

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[Any], processing_event: ProcessingEvent[UUID]) -> None:
        """Other events: nothing to send."""

    @policy.register
    def _(self, domain_event: BankAccount.Withdrawn, processing_event: ProcessingEvent[UUID]) -> None:
        processing_event.collect_events(Notice(domain_event.originator_id, domain_event.amount))
