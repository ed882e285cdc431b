"""The projection runner: catch up from the tracked position, then follow the feed.

One step reads the next events after the projection's position and, in one write transaction,
locks its tracking record, applies the events (all at once: ``Projection.process_batch``) and
advances the position; commit makes both visible together (exactly once for the read model).
Between steps the runner sleeps until a wake-up (``waking``), at most the poll interval.

A record is decoded only when the projection handles its topic (a class of ``handles``, or, when
that is empty, any class this process defines). The others, such as another application's events
in a shared database, are passed over undecoded, and the position moves past them; with
``handles`` empty a topic of no class here is logged once per runner (``projection_passed_over``),
so an old topic that a rename forgot to register (``register_topic``) still shows.

When the projection raises on an event, or a handled event cannot be decoded, the batch is rolled
back and replayed one event per transaction, so every event before the failing one is applied and
the projection **stops at it**. Its tracking record says where, which topic and which exception
(``/ready`` answers 503 naming them, and who must act: the projection's author, or for a stored
event that cannot be read an operator), the log has the whole message, and nothing after it is
processed. The runner tries that event again after a back-off growing to 30 s: a transient failure
heals by itself; a bug needs the code fixed and the runner restarted, which resumes at that event.
Nothing it handles is ever skipped, unless an operator parks the event (``uwsgi-es park``:
recorded, shown by ``uwsgi-es status``, replayable); the runner sees that within PARK_CHECK and
goes on after it.

Errors of the database itself (unreachable, locked, a table missing) are not the event's fault:
the runner logs them and retries with the same back-off, without marking the projection stopped.
When one outlasts the first retry (a missing table: at once), the runner records it as the reason
it **cannot run** (``/ready`` answers 503 naming it; best effort: the failing database may refuse
that write too), and clears it at its next successful step.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from uwsgi_es.application import Application, EventStore
from uwsgi_es.domain import DomainEvent, resolve_topic
from uwsgi_es.errors import (
    ProjectionStoppedError,
    ReadSideUnavailableError,
    SchemaMissingError,
    StoreUnavailableError,
    TopicError,
    UnreadableEventError,
    UwsgiEsError,
)
from uwsgi_es.metrics import recorder
from uwsgi_es.readside.projection import Projection, absent_tables, read_model_missing
from uwsgi_es.readside.tracking import advance, clear_trouble, lock, read, record_stop, record_trouble
from uwsgi_es.readside.waking import waker_for
from uwsgi_es.runtime import log, process
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import ProjectionFeed, StoredRecord
from uwsgi_es.stores.sqlalchemy.engine import translate
from uwsgi_es.stores.sqlalchemy.store import select_all_on

MAX_BACKOFF = 30.0
PARK_CHECK = 1.0  # seconds between a stopped runner's looks for its event parked
_UNDEFINED_TABLE = "42P01"


class StoppedAtEvent(Exception):
    """``record`` cannot be decoded or ``process`` raised on it (inside the transaction; handled
    after its rollback; a rebuild's switch turns it into its own error)."""

    def __init__(self, record: StoredRecord, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.record = record
        self.cause = cause


def feed_store(app: Application, what: str) -> ProjectionFeed:
    """The application's store, if it can feed projections (a global order of events)."""
    store = app.records
    if not isinstance(store, ProjectionFeed):
        raise ReadSideUnavailableError(
            f"{what} cannot run on {store.describe()}: projections read the events in one global "
            "order, which only uwsgi_es's SQL store keeps (SQLite, PostgreSQL). Cassandra keeps no "
            "order across aggregates. Run the read side on a SQL store, or leave it out (no "
            "`mule = %b-es-mule.py` line in the ini)."
        )
    return store


class ProjectionRunner:
    """Runs one projection over one application's feed, in this process."""

    def __init__(
        self,
        app: Application,
        projection: Projection,
        settings: Settings | None = None,
        *,
        feed: ProjectionFeed | None = None,
    ) -> None:
        """``feed``: where the tracking record and the read model are written, when not the
        application's store (a rebuild's new read model, ``readside.rebuild``)."""
        self.app = app
        self.projection = projection
        self.name = projection.name
        self.store = feed or feed_store(app, f"The projection {self.name!r}")
        settings = settings or app.settings
        self.batch = settings.readside_batch
        self.poll_interval = settings.readside_poll_interval
        self.listen_url = settings.listen_url
        self.limit = self.batch
        self.stopped_at: int | None = None
        self.handles = _handled(projection)
        self._classes: dict[str, type | None] = {}  # topic -> its class here (None: no class)
        self._full = False  # the last step applied a whole batch: more are likely waiting
        self.position = 0  # where its last step left the tracking record

    def step(self) -> int:
        """Apply the next events after the tracked position (a batch, in one transaction); return
        how many. ``ProjectionStoppedError`` when one of them cannot be processed."""
        full, self._full = self._full, False
        with self._translated():
            # Idle, a look without a lock first; catching up (the last batch was full), straight on.
            pending, cannot_run = (True, False) if full else self._pending()
            if not pending:
                if cannot_run:  # it runs again (also after a restart): /ready must know
                    with self.store.write_transaction() as connection:
                        clear_trouble(connection, self.name)
                return 0
            try:
                with self.store.write_transaction() as connection:
                    records = self.step_in(connection)
            except StoppedAtEvent as stopped:
                return self._stopped(stopped)
        recorder.projected(self.name, len(records))
        self._full = len(records) == self.limit
        if records and (self.stopped_at is None or (records[-1].id or 0) >= self.stopped_at):
            if self.stopped_at is not None:
                log.emit("projection_resumed", projection=self.name, position=records[-1].id)
            self.limit, self.stopped_at = self.batch, None
        return len(records)

    def step_in(self, connection: Connection) -> list[StoredRecord]:
        """The step's work in ``connection``'s transaction: lock the tracking record, apply the next
        batch, advance; the records applied. ``StoppedAtEvent`` (an event failed) leaves the
        transaction for the caller to roll back."""
        position = lock(connection, self.name)
        records = select_all_on(connection, position, self.limit)
        self._apply(records, connection)
        if records:
            self.position = records[-1].id or position
            advance(connection, self.name, self.position)
        else:
            self.position = position
        return records

    def catch_up(self) -> int:
        """Apply every event stored now; return how many."""
        total = 0
        while applied := self.step():
            total += applied
        return total

    def run(self, stop: threading.Event) -> None:
        """Follow the feed until ``stop`` is set, never raising: failures are logged and retried."""
        log.emit(
            "projection_runner",
            role=process.role(),
            pid=os.getpid(),
            projection=self.name,
            application=type(self.app).__qualname__,
            store=self.store.describe(),
        )
        waker = waker_for(self.store.engine, self.poll_interval, self.listen_url)
        backoff, failures = 0.0, 0
        try:
            while not stop.is_set():
                waker.arm()
                try:
                    applied = self.step()
                except (ProjectionStoppedError, StoreUnavailableError) as exc:
                    backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                    if isinstance(exc, StoreUnavailableError):
                        failures += 1
                        log.emit(
                            "projection_waiting",
                            logging.WARNING,
                            projection=self.name,
                            error=f"{type(exc).__name__}: {exc}",
                            retry_in=backoff,
                        )
                        # Once is weather (/ready must not flap); twice in a row, or a missing
                        # table, will not pass by itself.
                        if failures > 1 or isinstance(exc, SchemaMissingError):
                            self._record_trouble(exc)
                    else:
                        failures = 0
                    self._back_off(stop, backoff, stopped=isinstance(exc, ProjectionStoppedError))
                    continue
                backoff, failures = 0.0, 0
                if applied == 0:
                    waker.wait(stop)
        finally:
            waker.close()

    def _back_off(self, stop: threading.Event, seconds: float, *, stopped: bool) -> None:
        """Wait ``seconds`` (or until ``stop``). Stopped at an event, look every PARK_CHECK seconds
        whether an operator parked it (``uwsgi-es park`` moves the position to it), and go on then."""
        deadline = time.monotonic() + seconds
        while not stop.wait(min(PARK_CHECK, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (stopped and self._parked()):
                return

    def _parked(self) -> bool:
        try:
            with self.store.engine.connect() as connection:
                tracked = read(connection, [self.name])[self.name]
        except SQLAlchemyError:
            return False  # the retry that follows reports the database's trouble
        return self.stopped_at is not None and tracked.position >= self.stopped_at

    def _pending(self) -> tuple[bool, bool]:
        """Whether the feed holds an event after the position, and whether the tracking record
        says the runner cannot run (read only: no lock when idle)."""
        with self.store.engine.connect() as connection:
            tracked = read(connection, [self.name])[self.name]
            cannot_run = tracked.error is not None and tracked.error_position is None
            return bool(select_all_on(connection, tracked.position, 1)), cannot_run

    def _apply(self, records: list[StoredRecord], connection: Connection) -> None:
        """Hand the events of ``records`` this projection handles to ``process_batch`` at once.
        ``StoppedAtEvent`` names the record whose event failed when the batch holds one (else the
        first: the runner then replays the batch one event at a time to find it)."""
        batch = [(event, record) for record in records if (event := self._decoded(record)) is not None]
        if not batch:
            return
        try:
            self.projection.process_batch([(event, record.id or 0) for event, record in batch], connection)
        except Exception as exc:
            if is_database_error(exc):
                raise
            raise StoppedAtEvent(batch[0][1], exc) from exc

    def _decoded(self, record: StoredRecord) -> DomainEvent | None:
        """The event ``record`` stores; None to pass it over (a class this projection does not
        handle, or no class of this process). ``StoppedAtEvent`` when a handled one cannot be read."""
        cls = self._class_of(record)
        if cls is None or (self.handles and not issubclass(cls, self.handles)):
            return None
        try:
            return EventStore.from_record(record)
        except UnreadableEventError as exc:
            raise StoppedAtEvent(record, exc) from exc

    def _class_of(self, record: StoredRecord) -> type | None:
        """The class ``record``'s topic names in this process, or None (said once per topic when
        the projection takes every topic: it may be a renamed class's old topic)."""
        topic = record.topic
        if topic not in self._classes:
            try:
                self._classes[topic] = resolve_topic(topic)
            except TopicError:
                self._classes[topic] = None
                if not self.handles:
                    log.emit(
                        "projection_passed_over",
                        logging.WARNING,
                        projection=self.name,
                        topic=topic[:200],
                        position=record.id,
                        reason="no class of this process has this topic (another application's "
                        "event, or a renamed class's old topic: uwsgi_es.register_topic); declare "
                        "the projection's handles to pass such events over silently",
                    )
        return self._classes[topic]

    def _record_trouble(self, error: StoreUnavailableError) -> None:
        """Record why the runner cannot run, for ``/ready`` (cleared by its next successful step);
        best effort: the failing database may refuse this write too, then the log says so."""
        try:
            with self._translated(), self.store.write_transaction() as connection:
                record_trouble(connection, self.name, f"{type(error).__name__}: {error}"[:4000])
        except UwsgiEsError as exc:
            log.emit(
                "projection_cause_unrecorded",
                logging.WARNING,
                projection=self.name,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _stopped(self, stopped: StoppedAtEvent) -> int:
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
            fix = "repair the stored event" if _unreadable(type(cause).__name__) else "fix the code, restart"
            log.emit(
                "projection_stopped",
                logging.ERROR,
                exc_info=cause,
                projection=self.name,
                position=position,
                topic=record.topic,
                error=f"{type(cause).__name__}: {cause}",
                consequence=f"nothing after it is processed until it succeeds ({fix})",
            )
        raise ProjectionStoppedError(stopped_message(self.name, position, record.topic, type(cause).__name__))

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors as ours (scrubbed of secrets): the runner retries those."""
        try:
            yield
        except DBAPIError as exc:
            raise database_error(self.store, type(self.projection), exc) from exc
        except SQLAlchemyError as exc:
            raise self.store.unavailable(exc) from exc


def database_error(
    store: ProjectionFeed, projection: type[Projection] | None, exc: DBAPIError
) -> StoreUnavailableError:
    """The store's error for a driver's (scrubbed of secrets), naming the projection's missing
    tables and the fix when the table missing is one of its read model's."""
    error = translate(exc, store.describe(), store.scrub)
    if projection is not None and isinstance(error, SchemaMissingError):
        try:
            with store.engine.connect() as connection:
                missing = absent_tables(projection, connection)
        except SQLAlchemyError:
            missing = []  # the database's own error says enough
        if missing:
            return read_model_missing(projection.name, missing)
    return error


def stopped_message(projection: str, position: int, topic: str, error_type: str) -> str:
    """What a stopped projection is answered with: no text of the exception (it may hold data), and
    who must act: the projection's author, or an operator for a stored event that cannot be read."""
    where = f"The projection {projection!r} is stopped at position {position} (topic {topic[:200]})"
    if _unreadable(error_type):
        return (
            f"{where}: the stored event cannot be read ({error_type}); an operator must repair it "
            "(its stored state, or an upcast step or a registered old topic for its class). Its "
            "runner resumes at that event once it can be read."
        )
    return (
        f"{where}: processing it raised {error_type}. Fix the projection's code and restart its "
        "runner; it resumes at that event."
    )


def _unreadable(error_type: str) -> bool:
    return error_type == UnreadableEventError.__name__


def _handled(projection: Projection) -> tuple[type[DomainEvent], ...]:
    """The projection's ``handles``, checked: a topic string or a non-event there would pass over
    every event."""
    handles = type(projection).handles
    if isinstance(handles, tuple | list) and all(
        isinstance(cls, type) and issubclass(cls, DomainEvent) for cls in handles
    ):
        return tuple(handles)
    raise ReadSideUnavailableError(
        f"{type(projection).__qualname__}.handles is {handles!r}: it must be a tuple of the "
        "DomainEvent classes the projection processes, e.g. (BankAccount.Opened, "
        "BankAccount.Deposited), or empty for every event."
    )


def is_database_error(exc: BaseException) -> bool:
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
