"""Loading long streams fast: stored snapshots and a per-worker aggregate cache.

Both are optimisations; the events stay the truth and the store's optimistic-concurrency key
stays the only lock.

- **Snapshots**: every ``snapshot_interval`` events (``UWSGI_ES_SNAPSHOT_INTERVAL``, or the
  aggregate class's own attribute) the application stores the aggregate's state in the snapshots
  table of a ``SnapshotStore``, with the digest of its last event as stored. Loading starts from the
  latest snapshot and replays only the events after it, but only if the event at the snapshot's
  version is still stored as the digest says: events cut back under it (a restored backup, rows
  deleted by hand) and written again must never be folded onto its stale state. A snapshot of an
  older ``class_version`` is upcast; one that cannot be read, whose event is not stored as it
  remembers, or without a digest (stored by an older uwsgi_es: nothing proves it matches the
  events), is logged and ignored, and the aggregate replayed from its first event.
- **The cache** (``UWSGI_ES_AGGREGATE_CACHE`` entries, LRU, per worker) keeps an aggregate's
  state as a snapshot in memory, with the stored text of its last event. Loading reads the events
  from that last one on: if it is not stored as remembered (its transaction rolled back, or the
  cache is wrong for any reason) the entry is dropped and the aggregate loaded afresh; otherwise
  only the later events are replayed. A command therefore never acts on stale state, whatever the
  other workers wrote, and the cache is only filled from what was read back from the store.

A snapshot is only taken of state that reads back equal (``AggregateCodec.encode``); a class whose
state does not (an unannotated ``UUID`` attribute) is logged once, naming the attributes to
annotate, and is neither snapshotted nor cached.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from uuid import UUID

from uwsgi_es.domain import Aggregate, DomainEvent, aggregate_classes, resolve_topic, topic_of
from uwsgi_es.errors import TopicError, TranscodingError, UwsgiEsError
from uwsgi_es.runtime.log import emit
from uwsgi_es.settings import Settings
from uwsgi_es.stores import RecordStore, Snapshot, SnapshotStore, StoredRecord
from uwsgi_es.transcoding import AggregateCodec, aggregate_codec_for

log = logging.getLogger(__name__)
_WARNED_AT_MOST = 10_000  # distinct warnings remembered (each stale snapshot is one)


def event_digest(record: StoredRecord) -> str:
    """What a snapshot remembers of the stored event it was taken at: its topic and state, hashed."""
    text = f"{record.topic}\n{record.state}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()


class Cached(NamedTuple):
    cls: type[Aggregate]
    version: int
    state: str  # the aggregate's state, as a snapshot
    last_event: tuple[str, str]  # (topic, state) of the event at ``version``, as stored


class AggregateCache:
    """A bounded LRU of aggregates (as snapshots), safe across the threads of a worker."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[UUID, Cached] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.stale = 0

    def get(self, aggregate_id: UUID) -> Cached | None:
        with self._lock:
            entry = self._entries.get(aggregate_id)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(aggregate_id)
            self.hits += 1
            return entry

    def put(self, aggregate_id: UUID, entry: Cached) -> None:
        with self._lock:
            self._entries[aggregate_id] = entry
            self._entries.move_to_end(aggregate_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def discard(self, aggregate_id: UUID) -> None:
        with self._lock:
            self.stale += 1
            self._entries.pop(aggregate_id, None)

    def report(self) -> dict[str, int]:
        return {"size": len(self._entries), "hits": self.hits, "misses": self.misses, "stale": self.stale}


class Snapshots:
    """The snapshots and cache of one application (built with it, in its process)."""

    def __init__(self, records: RecordStore, settings: Settings) -> None:
        self.store: SnapshotStore | None = records if isinstance(records, SnapshotStore) else None
        self.interval = settings.snapshot_interval
        self.cache = AggregateCache(settings.aggregate_cache) if settings.aggregate_cache else None
        # Snapshots are read when they may be taken: the setting, or a class's own interval.
        self.reads = self.store is not None and (
            bool(self.interval) or any(cls.__dict__.get("snapshot_interval") for cls in aggregate_classes())
        )
        self._warned: set[str] = set()

    # Loading ---------------------------------------------------------------------------------

    def cached(self, aggregate_id: UUID) -> Cached | None:
        return None if self.cache is None else self.cache.get(aggregate_id)

    def from_cache(self, entry: Cached, aggregate_id: UUID, first: StoredRecord | None) -> Aggregate | None:
        """The cached aggregate if ``first`` (the stored event at its version) is the one it
        remembers; None (the entry dropped) otherwise."""
        remembered = first is not None and (
            first.originator_version == entry.version and (first.topic, first.state) == entry.last_event
        )
        if not remembered:
            self._drop(aggregate_id)
            return None
        try:
            aggregate: Aggregate = aggregate_codec_for(entry.cls).decode(
                aggregate_id, entry.version, entry.state
            )
        except (TranscodingError, TypeError, ValueError) as exc:  # the class changed under us
            self._warn(topic_of(entry.cls), "cannot read its cached state", exc)
            self._drop(aggregate_id)
            return None
        return aggregate

    def latest(self, aggregate_id: UUID) -> Snapshot | None:
        """The aggregate's latest stored snapshot, or None (none, or the snapshots cannot be read)."""
        if self.store is None or not self.reads:
            return None
        try:
            return self.store.latest_snapshot(aggregate_id)
        except UwsgiEsError as exc:
            self._warn("snapshots", "cannot be read; replaying from the first event", exc)
            return None

    def from_snapshot(self, snapshot: Snapshot, first: StoredRecord | None) -> Aggregate | None:
        """The aggregate at ``snapshot`` if ``first`` (the stored event at its version) is the event
        it was taken at; None (logged once) otherwise, or if it cannot be read."""
        aggregate_id, version = snapshot.originator_id, snapshot.originator_version
        if snapshot.last_event is None:
            self._warn(
                "snapshots",
                "stored without the digest of their event (by an older uwsgi_es) are ignored, each "
                "until its aggregate's next snapshot replaces it: nothing proves they match the events",
                None,
            )
            return None
        if first is None or first.originator_version != version or event_digest(first) != snapshot.last_event:
            found = "no event" if first is None else f"version {first.originator_version}"
            if first is not None and first.originator_version == version:
                found = f"another event at version {version} (topic {first.topic[:200]!r})"
            self._warn(
                f"snapshot of {aggregate_id} at version {version}",
                f"is stale: the store holds {found} where the snapshot's event was (events cut "
                "back or rewritten under it); ignored, replaying from the first event",
                None,
            )
            return None
        try:
            cls = resolve_aggregate(snapshot.topic)
            aggregate: Aggregate = aggregate_codec_for(cls).decode(aggregate_id, version, snapshot.state)
        except UwsgiEsError as exc:
            self._warn("snapshots", "cannot be read; replaying from the first event", exc)
            return None
        except (TypeError, ValueError) as exc:
            self._warn(f"snapshot of {aggregate_id}", "cannot be read; replaying from the first event", exc)
            return None
        return aggregate

    def _drop(self, aggregate_id: UUID) -> None:
        if self.cache is not None:
            self.cache.discard(aggregate_id)

    def remember(self, aggregate: Aggregate, last: StoredRecord) -> None:
        """Cache ``aggregate``, read from the store up to ``last`` (its latest stored event)."""
        if self.cache is None:
            return
        state = self._encode(aggregate)
        if state is not None:
            entry = Cached(type(aggregate), aggregate.version, state, (last.topic, last.state))
            self.cache.put(aggregate.id, entry)

    # Taking ----------------------------------------------------------------------------------

    def after_save(
        self,
        aggregates: Sequence[Aggregate],
        events: Sequence[DomainEvent],
        record_of: Callable[[DomainEvent], StoredRecord],
    ) -> None:
        """Snapshot each aggregate whose save (of ``events``) crossed a multiple of its interval,
        with the digest of its last event as ``record_of`` stores it. Best effort: the events are
        stored; a snapshot that fails is logged and taken at the next interval."""
        if self.store is None:
            return
        saved: dict[UUID, int] = {}
        last: dict[UUID, DomainEvent] = {}
        for event in events:
            saved[event.originator_id] = saved.get(event.originator_id, 0) + 1
            last[event.originator_id] = event
        for aggregate in aggregates:
            interval = self.interval_of(type(aggregate))
            count = saved.get(aggregate.id, 0)
            if (
                not interval
                or not count
                or aggregate.version // interval == (aggregate.version - count) // interval
            ):
                continue
            state = self._encode(aggregate)
            if state is None:
                continue
            digest = event_digest(record_of(last[aggregate.id]))
            snapshot = Snapshot(aggregate.id, aggregate.version, topic_of(type(aggregate)), state, digest)
            try:
                self.store.save_snapshot(snapshot)
            except UwsgiEsError as exc:
                self._warn("snapshots", "cannot be stored (is the table migrated?)", exc)

    def interval_of(self, cls: type[Aggregate]) -> int:
        own = getattr(cls, "snapshot_interval", None)
        return self.interval if own is None else int(own)

    def report(self) -> dict[str, Any]:
        return {
            "snapshot_interval": self.interval if self.store is not None else None,
            "cache": None if self.cache is None else self.cache.report(),
        }

    def _encode(self, aggregate: Aggregate) -> str | None:
        try:
            codec: AggregateCodec = aggregate_codec_for(type(aggregate))
        except TranscodingError as exc:
            self._warn(topic_of(type(aggregate)), "cannot be snapshotted", exc)
            return None
        if codec.unfaithful:
            return None
        state = codec.encode(aggregate)
        if state is None:
            self._warn(
                codec.name,
                "is neither snapshotted nor cached: its state does not read back equal; annotate "
                f"these attributes on the class with their types: {', '.join(codec.unfaithful)}",
                None,
            )
        return state

    def _warn(self, subject: str, problem: str, exc: BaseException | None) -> None:
        """Log once per subject and problem: an optimisation that is off is worth one line."""
        key = f"{subject} {problem}"
        if key in self._warned:
            return
        if len(self._warned) >= _WARNED_AT_MOST:
            self._warned.clear()
        self._warned.add(key)
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        emit("snapshot_skipped", logging.WARNING, subject=subject, problem=f"{problem}{detail}")


def resolve_aggregate(topic: str) -> type[Aggregate]:
    cls = resolve_topic(topic)
    if not (isinstance(cls, type) and issubclass(cls, Aggregate)):
        raise TopicError(f"Topic {topic!r} of a snapshot does not name an Aggregate subclass.")
    return cls
