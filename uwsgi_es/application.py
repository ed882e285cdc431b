"""Application layer: the in-process pub-sub, event store, repository, persistence policy and the
``Application`` base class that wires them to a record store.

Saving an aggregate *publishes* its new events; the persistence policy, subscribed to the
process-wide pub-sub, stores them. That is why there must be exactly one application per process:
two policies would store every event twice. ``PubSub.subscribe`` therefore refuses a second
persistence subscription for overlapping event types, and ``Application.close`` unsubscribes.

Global state, admitted: ``pubsub`` (the process-wide pub-sub) and the per-process construction
counter. Both are keyed to the current process where it matters; nothing here does I/O on import.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from uuid import UUID

from uwsgi_es.domain import Aggregate, DomainEvent, EventSequenceError, replay, resolve_topic, topic_of
from uwsgi_es.errors import (
    AggregateNotFoundError,
    ApplicationClosedError,
    ConcurrencyError,
    DuplicateSubscriptionError,
    TopicError,
    UnreadableEventError,
)
from uwsgi_es.metrics import recorder
from uwsgi_es.runtime import fork, retry
from uwsgi_es.settings import Settings
from uwsgi_es.snapshots import Snapshots
from uwsgi_es.stores import (
    GlobalFeed,
    RecordStore,
    RequestScope,
    StoredRecord,
    create_record_store,
    unit_of_work,
)
from uwsgi_es.transcoding import codec_for

T = TypeVar("T")
# The feed position of the last event this request (thread, greenlet) stored: a client that reads
# a projection can ask for at least it (the web layer answers it as X-Event-Position).
A = TypeVar("A", bound=Aggregate)
Handler = Callable[[Sequence[DomainEvent]], None]


@dataclass(eq=False)
class Subscription:
    handler: Handler
    event_type: type[DomainEvent]
    persistence: bool
    owner: str
    pid: int = field(default_factory=os.getpid)


class PubSub:
    """Synchronous, process-wide publish/subscribe of domain events."""

    def __init__(self) -> None:
        self._subscriptions: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()

    def subscribe(
        self,
        handler: Handler,
        event_type: type[DomainEvent],
        *,
        persistence: bool = False,
        owner: str = "",
    ) -> Subscription:
        """Call ``handler`` with the published events that are instances of ``event_type``."""
        new = Subscription(handler, event_type, persistence, owner)
        with self._lock:
            if persistence:
                for old in self._subscriptions:
                    if old.persistence and (
                        issubclass(old.event_type, event_type) or issubclass(event_type, old.event_type)
                    ):
                        raise DuplicateSubscriptionError(
                            f"{owner or 'A persistence policy'} would store {topic_of(event_type)} "
                            f"events, which {old.owner or 'another policy'} (subscribed in process "
                            f"{old.pid}) already stores: every event would be written twice and "
                            "every save would conflict. Keep one application per process: use "
                            "uwsgi_es.get_application(), or close the first application before "
                            "building another."
                        )
            self._subscriptions = (*self._subscriptions, new)
        return new

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def publish(self, events: Sequence[DomainEvent]) -> None:
        """Hand each subscriber, in subscription order, the events it subscribed to."""
        for subscription in self._subscriptions:  # a tuple: safe against concurrent (un)subscribe
            matching = [e for e in events if isinstance(e, subscription.event_type)]
            if matching:
                subscription.handler(matching)

    def count_persistence_subscriptions(self) -> int:
        return sum(1 for s in self._subscriptions if s.persistence)


pubsub = PubSub()
"""The process-wide pub-sub every application uses unless given another."""


class EventStore:
    """Maps domain events to stored records (state as typed JSON text, see
    ``uwsgi_es.transcoding``) and back."""

    _header = frozenset({"originator_id", "originator_version"})

    def __init__(self, records: RecordStore) -> None:
        self.records = records

    def put(self, events: Sequence[DomainEvent]) -> int | None:
        """Store the events atomically; their last feed position when the store has a feed."""
        return self.records.append([self.to_record(e) for e in events])

    def get(self, originator_id: UUID) -> list[DomainEvent]:
        return [self.from_record(r) for r in self.records.select(originator_id)]

    def to_record(self, event: DomainEvent) -> StoredRecord:
        cls = type(event)
        state = codec_for(cls, self._header).encode(event)
        return StoredRecord(event.originator_id, event.originator_version, topic_of(cls), state)

    @classmethod
    def from_record(cls, record: StoredRecord) -> DomainEvent:
        """The event a record stores; ``UnreadableEventError`` naming the record if it is corrupt
        or does not fit its class (a missing field wants an upcast step)."""
        try:
            codec = codec_for(resolve_topic(record.topic), cls._header)
            event: DomainEvent = codec.decode(
                {"originator_id": record.originator_id, "originator_version": record.originator_version},
                record.state,
            )
        except (TopicError, KeyError, TypeError, ValueError) as exc:
            raise UnreadableEventError(
                f"The stored event at version {record.originator_version} of {record.originator_id} "
                f"(position {record.id}, topic {record.topic[:200]!r}) cannot be read: "
                f"{type(exc).__name__}: {exc}. Nothing skips it: repair the row, give the class an "
                "upcast step for its old state, or list a renamed class's old topic in its "
                "topic_aliases; then read again."
            ) from exc
        return event


class Repository:
    """Rebuilds aggregates by replaying their stored events: from this worker's cached copy or the
    latest stored snapshot when there is one, then only the events after it (``uwsgi_es.snapshots``).
    A stream that does not follow on (a version missing) is stored data to repair, like an event
    that cannot be read: ``UnreadableEventError`` naming the record."""

    def __init__(self, event_store: EventStore, snapshots: Snapshots | None = None) -> None:
        self.event_store = event_store
        self.snapshots = snapshots

    def get(self, aggregate_id: UUID, aggregate_type: type[A]) -> A:
        if self.snapshots is None:
            aggregate = self._fold(self._select(aggregate_id, 0))
        else:
            aggregate = self._load(aggregate_id, self.snapshots)
        if not isinstance(aggregate, aggregate_type):
            raise AggregateNotFoundError(f"No {aggregate_type.__name__} with id {aggregate_id} is stored.")
        return aggregate

    def _load(self, aggregate_id: UUID, snapshots: Snapshots) -> Aggregate | None:
        entry = snapshots.cached(aggregate_id)
        if entry is not None:
            # From the cached version's own event on: it must be stored as the cache remembers it.
            records = self._select(aggregate_id, entry.version - 1)
            start = snapshots.from_cache(entry, aggregate_id, records[0] if records else None)
            if start is not None:
                return self._forward(start, records, snapshots)
        snapshot = snapshots.latest(aggregate_id)
        if snapshot is not None:
            # From the snapshot's own event on: it must be stored as the snapshot remembers it.
            records = self._select(aggregate_id, snapshot.originator_version - 1)
            start = snapshots.from_snapshot(snapshot, records[0] if records else None)
            if start is not None:
                return self._forward(start, records, snapshots)
        records = self._select(aggregate_id, 0)
        aggregate = self._fold(records)
        if aggregate is not None:
            snapshots.remember(aggregate, records[-1])
        return aggregate

    def _select(self, aggregate_id: UUID, after_version: int) -> list[StoredRecord]:
        records = self.event_store.records
        return (
            records.select(aggregate_id, after_version=after_version)
            if after_version
            else records.select(aggregate_id)
        )

    def _forward(
        self, start: Aggregate, records: list[StoredRecord], snapshots: Snapshots
    ) -> Aggregate | None:
        """``start`` (at the version of ``records[0]``) with the later records applied."""
        later = records[1:]
        if not later:
            return start
        aggregate = self._fold(later, start)
        if aggregate is not None:
            snapshots.remember(aggregate, later[-1])
        return aggregate

    def _fold(self, records: list[StoredRecord], start: Aggregate | None = None) -> Aggregate | None:
        """The stored ``records`` applied in order (onto ``start``, a snapshot or cached copy)."""
        events = [self.event_store.from_record(r) for r in records]
        try:
            return replay(events, start)
        except EventSequenceError as exc:
            raise _out_of_sequence(records, start, exc) from exc


def _out_of_sequence(
    records: list[StoredRecord], start: Aggregate | None, error: EventSequenceError
) -> UnreadableEventError:
    """The error for a stored stream that does not follow on, naming the first record out of place."""
    expected = 1 if start is None else start.version + 1
    culprit = records[0]
    for record in records:
        if record.originator_version != expected:
            culprit = record
            break
        expected += 1
    return UnreadableEventError(
        f"The stored events of {culprit.originator_id} do not follow on at version "
        f"{culprit.originator_version} (position {culprit.id}, topic {culprit.topic[:200]!r}; version "
        f"{expected} was expected): {error} Nothing skips it: an operator must repair the stream (a "
        "version missing, or stored twice), then read again."
    )


class PersistencePolicy:
    """Stores every published event of one type: the only writer of the event store."""

    def __init__(
        self, event_store: EventStore, event_type: type[DomainEvent], bus: PubSub, owner: str
    ) -> None:
        self.event_store = event_store
        self.bus = bus
        self.subscription = bus.subscribe(self.store_events, event_type, persistence=True, owner=owner)

    def store_events(self, events: Sequence[DomainEvent]) -> None:
        position = self.event_store.put(events)
        recorder.events_stored(len(events))
        if position is not None:
            unit_of_work.stored_at(position)

    def close(self) -> None:
        self.bus.unsubscribe(self.subscription)


_construction_lock = threading.Lock()
_constructions: dict[int, int] = {}


def constructions_in_this_process() -> int:
    """How many applications this process (not its parent) has constructed."""
    return _constructions.get(os.getpid(), 0)


class Application:
    """An event-sourced application: a repository to load aggregates and ``save`` to store events.

    Subclass it, set ``persist_event_type`` to narrow what it stores, and add command methods.
    An application owns its record store: ``close()`` unsubscribes and releases the connections.
    """

    persist_event_type: ClassVar[type[DomainEvent]] = DomainEvent
    # The read side: projection classes (or "module:Class" strings, resolved when a runner starts)
    # that uwsgi_es.readside runs over this application's feed, one per mule.
    projections: ClassVar[Sequence[type[Any] | str]] = ()

    def __init__(
        self, records: RecordStore, *, settings: Settings | None = None, bus: PubSub | None = None
    ) -> None:
        self.settings = settings or Settings()
        self.built_in_pid = os.getpid()
        self.records = records
        # What the store can do, learnt once: a global order of all events (SQL stores, not
        # Cassandra) is what `/events` and the read side need.
        self.feed: GlobalFeed | None = records if isinstance(records, GlobalFeed) else None
        # Decided once: a protocol isinstance check costs about 10 µs, and every request ends.
        self._request_scope: RequestScope | None = records if isinstance(records, RequestScope) else None
        self.event_store = EventStore(records)
        self.snapshots = Snapshots(records, self.settings)
        self.repository = Repository(self.event_store, self.snapshots)
        self.bus = pubsub if bus is None else bus
        self.conflicts = 0
        self.retries = 0
        self._closed = False
        try:
            self.policy = PersistencePolicy(
                self.event_store,
                self.persist_event_type,
                self.bus,
                owner=f"{type(self).__qualname__} built in process {self.built_in_pid}",
            )
        except BaseException:
            records.close()
            raise
        with _construction_lock:
            _constructions[self.built_in_pid] = _constructions.get(self.built_in_pid, 0) + 1

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Connect to the store the settings name and build the application on it."""
        records = create_record_store(settings)
        if settings.is_sqlite_memory:
            # An in-memory database is born empty in each process; no migrate step can reach it.
            records.create_schema()
        return cls(records, settings=settings)

    def ping(self) -> None:
        """Raise unless this application may be used here and its store answers."""
        self.check_usable()
        self.records.ping()

    def check_ready(self) -> None:
        """Raise unless this application can serve now, writes included (``/ready``)."""
        self.check_usable()
        self.records.check_ready()

    def describe(self) -> str:
        """The store it runs on, for logs and ``/worker`` (no secrets)."""
        return self.records.describe()

    def report(self) -> dict[str, Any]:
        """What ``/worker`` adds for this application: how many were built in this process, its
        persistence subscriptions, the conflicts it met, its connection pool."""
        return {
            "constructions": constructions_in_this_process(),
            "subscriptions": self.bus.count_persistence_subscriptions(),
            "conflicts": self.conflicts,
            "retries": self.retries,
            "pool": self.records.pool_status(),
            **self.snapshots.report(),
        }

    def end_request(self) -> None:
        """Release what the request held in the store (its SQL session), if it holds anything."""
        if self._request_scope is not None:
            self._request_scope.end_request()

    def check_usable(self) -> None:
        """Raise unless this application may be used here: open, and built in this process."""
        if self._closed:
            raise ApplicationClosedError(
                f"{type(self).__qualname__} was closed; build a new one (init_application) instead."
            )
        fork.refuse_if_forked(type(self).__qualname__, self.built_in_pid)

    def save(self, *aggregates: Aggregate) -> int | None:
        """Publish the aggregates' new events; the persistence policy stores them atomically.
        Returns the feed position of the last one (None without a feed, or nothing to save)."""
        self.check_usable()
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        if not events:
            return None
        unit_of_work.stored_at(None)
        self.bus.publish(events)
        if self.snapshots.store is not None:
            self.snapshots.after_save(aggregates, events, self.event_store.to_record)
        return unit_of_work.current().position

    def get(self, aggregate_id: UUID, aggregate_type: type[A]) -> A:
        self.check_usable()
        return self.repository.get(aggregate_id, aggregate_type)

    def command(self, run: Callable[[], T]) -> T:
        """Run a load-change-save command; on a conflict, reload and run it again (bounded).

        Retrying re-runs the whole command on fresh state; it never re-sends the same events.
        After ``settings.conflict_retries`` retries the ``ConcurrencyError`` propagates.
        """
        try:
            result = retry.retry_on_conflict(
                run,
                conflict=ConcurrencyError,
                retries=self.settings.conflict_retries,
                on_conflict=self._count_conflict,
                on_retry=self._count_retry,
            )
        except ConcurrencyError:
            recorder.command_run("conflict")
            raise
        except BaseException:
            recorder.command_run("failed")
            raise
        recorder.command_run("done")
        return result

    def _count_conflict(self) -> None:
        self.conflicts += 1
        recorder.conflict()

    def _count_retry(self) -> None:
        self.retries += 1
        recorder.retried()

    def close(self) -> None:
        """Unsubscribe the persistence policy and release connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.policy.close()
        self.records.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
