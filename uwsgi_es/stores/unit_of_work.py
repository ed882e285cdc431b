"""The unit of work of this context (a request's thread or greenlet, a command): one readable
object in one context variable, instead of a flag here and a tuple there.

- ``transaction``: the datastore and connection of a write transaction this context's statements
  join (a keyed request's: its events and its answer commit together), or None: each operation
  takes its own.
- ``committing``: whether the current operation's own transaction reached COMMIT; a failure from
  there on may have been stored, so it is never retried.
- ``position``: the feed position of the last event the current save stored (what a client waits
  for to read its own write), set by the persistence policy on the far side of the pub-sub.

The object is immutable and every change sets a new one, so contexts never share a unit: a
greenlet or thread that inherited another's context sees what it had, and its own changes stay
its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UnitOfWork:
    transaction: tuple[Any, Any] | None = None  # (datastore, connection) joined, or None
    committing: bool = False
    position: int | None = None

    def joins(self, datastore: object) -> Any | None:
        """The connection whose transaction ``datastore``'s statements join here, or None."""
        if self.transaction is not None and self.transaction[0] is datastore:
            return self.transaction[1]
        return None


_NONE_YET = UnitOfWork()
_unit: ContextVar[UnitOfWork] = ContextVar("uwsgi_es_unit_of_work")


def current() -> UnitOfWork:
    """This context's unit of work."""
    return _unit.get(_NONE_YET)


@contextmanager
def begin() -> Iterator[None]:
    """A fresh unit for one request (the web layer's) or command; the one before is back after."""
    token = _unit.set(UnitOfWork())
    try:
        yield
    finally:
        _unit.reset(token)


def committing(reached: bool) -> None:
    """Record whether the current operation's own transaction has reached COMMIT."""
    unit = current()
    if unit.committing is not reached:  # on the hot path: most calls change nothing
        _unit.set(UnitOfWork(unit.transaction, reached, unit.position))


def stored_at(position: int | None) -> None:
    """Record the feed position of the last event stored (None: start of a save, or no feed)."""
    unit = current()
    if unit.position != position:
        _unit.set(UnitOfWork(unit.transaction, unit.committing, position))


@contextmanager
def joining(datastore: object, connection: Any) -> Iterator[None]:
    """Within: this context's statements on ``datastore`` join ``connection``'s transaction. On
    leaving, the unit joins what it joined before; what was recorded inside stays recorded."""
    unit = current()
    before = unit.transaction
    _unit.set(UnitOfWork((datastore, connection), unit.committing, unit.position))
    try:
        yield
    finally:
        unit = current()
        _unit.set(UnitOfWork(before, unit.committing, unit.position))
