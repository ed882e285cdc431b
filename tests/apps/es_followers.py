"""A system of the eventsourcing library's process applications following the library-written bank:
``Notices`` sends one ``Notice`` per withdrawal, ``Emails`` queues one ``Email`` per notice
(``system``: bank -> notices -> emails). Named in UWSGI_ES_PROJECTIONS, ``system`` runs each
follower in a runner mule of its own; ``Notices`` alone follows the bank."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.system import ProcessApplication, System

from examples.eventsourcing_bank.application import BankAccounts
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


class Email(Aggregate):
    @event("Queued")
    def __init__(self, account_id: UUID, amount: int) -> None:
        self.account_id = account_id
        self.amount = amount


class Emails(ProcessApplication[UUID]):
    name = "emails"

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[Any], processing_event: ProcessingEvent[UUID]) -> None:
        """Other events: nothing to queue."""

    @policy.register
    def _(self, domain_event: Notice.Sent, processing_event: ProcessingEvent[UUID]) -> None:
        processing_event.collect_events(Email(domain_event.account_id, domain_event.amount))


system = System(pipes=[[BankAccounts, Notices, Emails]])
