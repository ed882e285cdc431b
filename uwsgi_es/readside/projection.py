"""What a projection is: a name, its tables, the events it handles, and what it does with one event.

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

**Batches.** The runner hands a projection each transaction's events at once, through
``process_batch`` (by default ``process`` for each, in order). A projection that applies them in
fewer statements (one upsert per key for the whole batch instead of one per event) overrides it:
a statement's round trip, not Python, is what limits a runner, and one per batch is what lets the
read side keep up with writers committing in parallel. ``process_batch`` must leave the read model
as ``process`` would, event after event (the runner falls back to batches of one to find an event
that fails, and those pass through ``process_batch`` too).

``process`` must be deterministic for the read model to equal a fold of the events. Raising stops
the projection at that event (nothing after it is processed, nothing is skipped) until the code
is fixed: see ``uwsgi_es.readside.runner``. Events of other classes than ``handles`` names (when
it names any), and events of classes this process does not define (another application's, in a
shared database), are passed over: ``process`` never sees them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

from sqlalchemy import Connection, MetaData, inspect

from uwsgi_es.domain import DomainEvent
from uwsgi_es.errors import ReadModelMissingError


class Projection(abc.ABC):
    """Subclass it: set ``name`` (its tracking record's key) and ``metadata`` (its tables, created by
    ``uwsgi-es migrate``), and write ``process``. One instance per runner process."""

    name: ClassVar[str]
    metadata: ClassVar[MetaData]
    # The event classes (and their subclasses) ``process`` is given; the others are passed over
    # without being decoded. Empty: every event this process can read.
    handles: ClassVar[tuple[type[DomainEvent], ...]] = ()

    @abc.abstractmethod
    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        """Apply one event (at feed ``position``) to the read model, through ``connection`` only."""

    def process_batch(self, events: Sequence[tuple[DomainEvent, int]], connection: Connection) -> None:
        """Apply ``events`` (each with its feed position, in feed order) as ``process`` would, one
        after the other; override to do it in fewer statements."""
        for event, position in events:
            self.process(event, position, connection)


def absent_tables(projection: type[Projection], connection: Connection) -> list[str]:
    """The names of the projection's tables that do not exist in ``connection``'s database."""
    inspector = inspect(connection)
    return [
        table.name
        for table in projection.metadata.sorted_tables
        if not inspector.has_table(table.name, schema=table.schema)
    ]


def read_model_missing(projection: str, tables: Sequence[str]) -> ReadModelMissingError:
    """The error for a projection whose tables do not exist, with the fix."""
    some = f"table {tables[0]} does" if len(tables) == 1 else f"tables {', '.join(tables)} do"
    return ReadModelMissingError(
        f"The read model of the projection {projection!r} is not in this database: its {some} not "
        "exist. Create them with `uwsgi-es migrate --ini <the ini uWSGI runs>` (it finds the "
        "application that declares the projection there, or UWSGI_ES_APPLICATION names it); the "
        "runner then catches up by itself."
    )
