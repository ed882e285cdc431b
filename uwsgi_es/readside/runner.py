"""The projection runner: catch up from the tracked position, then follow the feed.

One step reads the next events after the projection's position and, in one write transaction,
locks its tracking record, applies each event and advances the position; commit makes both
visible together (exactly once for the read model). Between steps the runner sleeps until a
wake-up (``waking``), at most the poll interval.

When ``process`` raises on an event, the batch is rolled back and replayed one event per
transaction, so every event before the failing one is applied and the projection **stops at it**:
its tracking record says where, which topic and which exception (``/ready`` answers 503 naming
them), the log has the whole message, and nothing after it is processed. The runner tries that
event again after a back-off growing to 30 s: a transient failure heals by itself; a bug needs the
code fixed and the runner restarted, which resumes at that event. Nothing is ever skipped.

Errors of the database itself (unreachable, locked, a table missing) are not the event's fault:
the runner logs them and retries with the same back-off, without marking the projection stopped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from uwsgi_es.application import Application, EventStore
from uwsgi_es.errors import ProjectionStoppedError, ReadSideUnavailableError, StoreUnavailableError
from uwsgi_es.lifecycle import events, process
from uwsgi_es.metrics import recorder
from uwsgi_es.readside.projection import Projection
from uwsgi_es.readside.tracking import advance, lock, read, record_stop
from uwsgi_es.readside.waking import waker_for
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import StoredRecord
from uwsgi_es.stores.sqlalchemy.engine import translate
from uwsgi_es.stores.sqlalchemy.store import SQLAlchemyRecordStore, select_all_on

MAX_BACKOFF = 30.0
_UNDEFINED_TABLE = "42P01"


class _Stopped(Exception):
    """``process`` raised on ``record`` (inside the transaction; handled after its rollback)."""

    def __init__(self, record: StoredRecord, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.record = record
        self.cause = cause


def feed_store(app: Application, what: str) -> SQLAlchemyRecordStore:
    """The application's store, if it can feed projections (a global order of events)."""
    store = app.records
    if not isinstance(store, SQLAlchemyRecordStore):
        raise ReadSideUnavailableError(
            f"{what} cannot run on {store.describe()}: projections read the events in one global "
            "order, which only uwsgi_es's SQL store keeps (SQLite, PostgreSQL). Cassandra keeps no "
            "order across aggregates. Run the read side on a SQL store, or leave it out (no "
            "`mule = .../uwsgi_es/readside/mule_script.py` in the ini)."
        )
    return store


class ProjectionRunner:
    """Runs one projection over one application's feed, in this process."""

    def __init__(self, app: Application, projection: Projection, settings: Settings | None = None) -> None:
        self.app = app
        self.projection = projection
        self.name = projection.name
        self.store = feed_store(app, f"The projection {self.name!r}")
        settings = settings or app.settings
        self.batch = settings.readside_batch
        self.poll_interval = settings.readside_poll_interval
        self.limit = self.batch
        self.stopped_at: int | None = None

    def step(self) -> int:
        """Apply the next events after the tracked position (a batch, in one transaction); return
        how many. ``ProjectionStoppedError`` when one of them cannot be processed."""
        with self._translated():
            if not self._pending():
                return 0
            try:
                with self.store.write_transaction() as connection:
                    position = lock(connection, self.name)
                    records = select_all_on(connection, position, self.limit)
                    for record in records:
                        self._apply(record, connection)
                    if records:
                        advance(connection, self.name, records[-1].id or position)
            except _Stopped as stopped:
                return self._stopped(stopped)
        recorder.projected(self.name, len(records))
        if records and (self.stopped_at is None or (records[-1].id or 0) >= self.stopped_at):
            if self.stopped_at is not None:
                events.emit("projection_resumed", projection=self.name, position=records[-1].id)
            self.limit, self.stopped_at = self.batch, None
        return len(records)

    def catch_up(self) -> int:
        """Apply every event stored now; return how many."""
        total = 0
        while applied := self.step():
            total += applied
        return total

    def run(self, stop: threading.Event) -> None:
        """Follow the feed until ``stop`` is set, never raising: failures are logged and retried."""
        events.emit(
            "projection_runner",
            role=process.role(),
            pid=os.getpid(),
            projection=self.name,
            application=type(self.app).__qualname__,
            store=self.store.describe(),
        )
        waker = waker_for(self.store.engine, self.poll_interval)
        backoff = 0.0
        try:
            while not stop.is_set():
                waker.arm()
                try:
                    applied = self.step()
                except (ProjectionStoppedError, StoreUnavailableError) as exc:
                    backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                    if isinstance(exc, StoreUnavailableError):
                        events.emit(
                            "projection_waiting",
                            logging.WARNING,
                            projection=self.name,
                            error=f"{type(exc).__name__}: {exc}",
                            retry_in=backoff,
                        )
                    stop.wait(backoff)
                    continue
                backoff = 0.0
                if applied == 0:
                    waker.wait(stop)
        finally:
            waker.close()

    def _pending(self) -> bool:
        """Whether the feed holds an event after the position (read only: no lock when idle)."""
        with self.store.engine.connect() as connection:
            position = read(connection, [self.name])[self.name].position
            return bool(select_all_on(connection, position, 1))

    def _apply(self, record: StoredRecord, connection: Connection) -> None:
        try:
            event = EventStore.from_record(record)
            self.projection.process(event, record.id or 0, connection)
        except Exception as exc:
            if _is_the_database(exc):
                raise
            raise _Stopped(record, exc) from exc

    def _stopped(self, stopped: _Stopped) -> int:
        """After the rollback: replay the batch one event per transaction, so the projection stops
        exactly at the failing event; there, record why and raise."""
        if self.limit > 1:
            self.limit = 1
            return self.step()
        record, cause = stopped.record, stopped.cause
        position = record.id or 0
        first_time = self.stopped_at != position
        self.stopped_at = position
        with self.store.write_transaction() as connection:
            record_stop(
                connection, self.name, position, record.topic, f"{type(cause).__name__}: {cause}"[:4000]
            )
        if first_time:
            events.emit(
                "projection_stopped",
                logging.ERROR,
                exc_info=cause,
                projection=self.name,
                position=position,
                topic=record.topic,
                error=f"{type(cause).__name__}: {cause}",
                consequence="nothing after it is processed until it succeeds (fix the code, restart)",
            )
        raise ProjectionStoppedError(stopped_message(self.name, position, record.topic, type(cause).__name__))

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors as ours (scrubbed of secrets): the runner retries those."""
        try:
            yield
        except DBAPIError as exc:
            raise translate(exc, self.store.describe(), self.store.scrub) from exc
        except SQLAlchemyError as exc:
            raise self.store.unavailable(exc) from exc


def stopped_message(projection: str, position: int, topic: str, error_type: str) -> str:
    """What a stopped projection is answered with: no text of the exception (it may hold data)."""
    return (
        f"The projection {projection!r} is stopped at position {position} (topic {topic[:200]}): "
        f"processing it raised {error_type}. Fix the projection's code and restart its runner; it "
        "resumes at that event."
    )


def _is_the_database(exc: BaseException) -> bool:
    """A failure of the database rather than of the projection's code on this event."""
    if isinstance(exc, StoreUnavailableError):
        return True
    if isinstance(exc, DBAPIError):
        undefined_table = getattr(exc.orig, "sqlstate", None) == _UNDEFINED_TABLE
        return (
            exc.connection_invalidated
            or undefined_table
            or isinstance(exc, OperationalError | InterfaceError)
        )
    return False
