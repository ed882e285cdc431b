"""What a projection is: a name, its tables, and what it does with one event.

A projection turns the application's events, in feed order, into a read model that can be queried
(a balances table, a search index) or into effects (a mail sent, a call to another service). The
runner calls ``process`` for each event with the connection of a transaction in which it also
records the position it reached (the tracking record), and commits both together:

- **writes through** ``connection`` (the projection's own tables) happen **exactly once**: a crash
  at any point rolls back the read model and the position together, and the event is processed
  again, from scratch, after the restart;
- **effects outside the database** happen **at least once**: an effect made before a crash that
  rolled the batch back is made again. ``position`` is unique and increasing per event: pass it
  along (an idempotency key) so the receiver can drop a repeat.

``process`` must be deterministic for the read model to equal a fold of the events. Raising stops
the projection at that event (nothing after it is processed, nothing is skipped) until the code
is fixed: see ``uwsgi_es.readside.runner``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from sqlalchemy import Connection, MetaData

from uwsgi_es.domain import DomainEvent


class Projection(abc.ABC):
    """Subclass it: set ``name`` (its tracking record's key) and ``metadata`` (its tables, created by
    ``uwsgi-es migrate``), and write ``process``. One instance per runner process."""

    name: ClassVar[str]
    metadata: ClassVar[MetaData]

    @abc.abstractmethod
    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        """Apply one event (at feed ``position``) to the read model, through ``connection`` only."""
