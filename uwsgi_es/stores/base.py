"""The record-store contract every backend fulfils, the capabilities a store may add, and the
stored record they speak in.

A record store knows nothing of domain events: it appends and reads rows of
(originator_id, originator_version, topic, state). Its one hard promise is optimistic concurrency:
appending a version that already exists raises ``ConcurrencyError`` and stores none of the batch.

Capabilities, not refusals: a store that keeps a global order of its records is also a
``GlobalFeed``; one that holds state per request (a SQL session) is also a ``RequestScope``; one
that can store a request's answer in the same transaction as its events is ``IdempotentWrites``;
one that keeps aggregate snapshots is a ``SnapshotStore``. An
application learns what its store can do when it is built, and nothing is refused per call.

A store remembers the process that built it. Its connections belong to that process alone, so any
use from a forked child raises ``ForkedApplicationError`` instead of sharing sockets, and
``close()`` there only forgets them (``_forget``), never closes them (``_release``): written once,
here. Messages a store builds from a driver's error go through ``unavailable``/``scrub`` with the
secrets of its configuration, so no password reaches a log line, however the driver phrased it.
"""

from __future__ import annotations

import abc
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable
from uuid import UUID

from uwsgi_es.errors import ConcurrencyError, StoreReadOnlyError, StoreUnavailableError
from uwsgi_es.redaction import scrub
from uwsgi_es.runtime import fork

if TYPE_CHECKING:  # the contract names SQLAlchemy's types; only an SQL store imports SQLAlchemy
    from sqlalchemy import Connection, Engine

HEARTBEAT_TABLE = "uwsgi_es_heartbeat"
TRACKING_TABLE = "uwsgi_es_tracking"  # the read side's positions (uwsgi_es.readside.tracking)
PARKED_TABLE = "uwsgi_es_parked"  # events set aside for a stopped projection (uwsgi_es.readside.operations)
SNAPSHOTS_TABLE = "uwsgi_es_snapshots"  # the latest snapshot of each aggregate (uwsgi_es.snapshots)
IDEMPOTENCY_TABLE = "uwsgi_es_idempotency"  # answers of keyed requests (uwsgi_es.web.idempotency)
FEED_CHANNEL = "uwsgi_es_events"  # PostgreSQL: NOTIFY'd by reads waiting for a projection; runners LISTEN


# SQLite checkpoints its write-ahead log at 1000 pages (4 MiB): below that much free space, appends
# start failing with "database or disk is full" while small writes still fit in its free frames.
MIN_FREE_BYTES = 4 * 1024 * 1024


def require_room_for_the_log(directory: Path, store: str) -> None:
    """Raise ``StoreReadOnlyError`` when the disk holding an SQLite database (``directory``) has
    less room than its write-ahead log needs before a checkpoint: not ready for writes."""
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        raise StoreReadOnlyError(
            f"{store} cannot take writes: its disk has {free} bytes free, under the "
            f"{MIN_FREE_BYTES} a write-ahead log needs before a checkpoint. Free some space."
        )


def heartbeat_name() -> str:
    """This host's row in the heartbeat table (one row per host: the table never grows)."""
    return socket.gethostname()[:200]


class StoredRecord(NamedTuple):
    """One stored event. ``id`` is its position in the global order, set by the store."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: str
    id: int | None = None


class Snapshot(NamedTuple):
    """An aggregate's state at a version. ``last_event`` is the digest of the stored event at that
    version when the snapshot was taken (``uwsgi_es.snapshots.event_digest``): a snapshot is used
    only while that event is still stored as it was. None for one stored before digests were kept."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: str
    last_event: str | None = None


def version_conflict(records: Sequence[StoredRecord]) -> ConcurrencyError:
    """The error every store raises when a batch hits a version that is already stored."""
    first = records[0]
    return ConcurrencyError(
        f"Version {first.originator_version} of {first.originator_id} (or a later one in the batch) "
        "is already stored: another writer got there first. Nothing was stored; reload the "
        "aggregate and run the command again."
    )


class RecordStore(abc.ABC):
    """Append-only storage of records, one stream per originator."""

    #: Passwords and the like from this store's configuration, masked in every message it builds.
    secrets: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.built_in_pid = os.getpid()
        self._closed = False

    def scrub(self, message: object) -> str:
        """``message`` (e.g. a driver's error) on one line, with this store's secrets masked."""
        return " ".join(scrub(str(message), self.secrets).split())

    def unavailable(self, error: object) -> StoreUnavailableError:
        """The error for a store that did not answer, naming it and the (scrubbed) cause."""
        return StoreUnavailableError(f"{self.describe()} is unavailable: {self.scrub(error)}")

    def check_process(self) -> None:
        """Refuse to be used from a process other than the one that built this store."""
        fork.refuse_if_forked(f"This {self.describe()}", self.built_in_pid)

    @abc.abstractmethod
    def describe(self) -> str:
        """Which store this is, without secrets: used in logs and error messages."""

    @abc.abstractmethod
    def create_schema(self) -> None:
        """Create the tables if they are missing (idempotent). Run once per deployment."""

    @abc.abstractmethod
    def append(self, records: Sequence[StoredRecord]) -> int | None:
        """Store all records atomically, or none; ``ConcurrencyError`` if a version exists.
        Returns the feed position of the last record stored, when the store keeps a global feed
        (None otherwise): what a client waits for to read its own write in a projection."""

    @abc.abstractmethod
    def select(
        self, originator_id: UUID, *, after_version: int = 0, limit: int | None = None
    ) -> list[StoredRecord]:
        """The records of one originator with a version above ``after_version``, in version order,
        at most ``limit`` of them (all when None)."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise ``StoreUnavailableError`` (or ``SchemaMissingError``) unless the store answers."""

    def check_ready(self) -> None:
        """Raise unless the store answers *and accepts writes* (what ``/ready`` means): a store
        that is read-only, full, or cannot reach a write quorum is not ready. Default: ``ping``."""
        self.ping()

    def pool_status(self) -> dict[str, int]:
        """Connection-pool figures for diagnostics (``/worker``), e.g. ``{"checked_out": 0}``."""
        return {}

    def close(self) -> None:
        """Release every connection; in a forked child only forget the parent's. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if fork.inherited(self.built_in_pid):
            self._forget()
        else:
            self._release()

    @abc.abstractmethod
    def _release(self) -> None:
        """Close this process's connections (``close`` calls it once, in the building process)."""

    def _forget(self) -> None:  # noqa: B027 (most stores have nothing to forget)
        """Drop connections inherited across fork without touching them (they are the parent's)."""


@runtime_checkable
class GlobalFeed(Protocol):
    """A store that keeps one order of every originator's records (SQL stores; not Cassandra)."""

    def select_all(self, after_id: int, limit: int) -> list[StoredRecord]:
        """Records of every originator with ``id > after_id``, in id order, at most ``limit``."""
        ...


@runtime_checkable
class ProjectionFeed(GlobalFeed, Protocol):
    """What the read side runs on: a global feed whose SQL database lends the projections its
    write transactions (a batch of events applied with its tracking record, in one), its engine
    (tracking reads, wake-ups) and its errors. uwsgi_es's SQL store offers it; the read side asks
    for the capability, never for a class."""

    @property
    def engine(self) -> Engine: ...

    def write_transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction of its own, as the store's appends take theirs."""
        ...

    def last_position(self) -> int:
        """The feed position of the last record the feed shows (0 when there is none)."""
        ...

    def count_after(self, position: int, cap: int) -> int:
        """How many events are stored after ``position``, counted up to ``cap``."""
        ...

    def wake_projections(self, connection: Connection) -> None:
        """Wake the runners now and end ``connection``'s transaction."""
        ...

    def describe(self) -> str: ...

    def scrub(self, message: object) -> str: ...

    def unavailable(self, error: object) -> StoreUnavailableError: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class RequestScope(Protocol):
    """Something that holds state for one request (a SQL session) and releases it after."""

    def end_request(self) -> None:
        """Release what one request held. Called after every request, also after errors."""
        ...


@runtime_checkable
class IdempotentWrites(Protocol):
    """A store that keeps the answer of a keyed request in the same transaction as the events the
    request stored (SQL stores): a repeat of the request gets that answer and stores nothing."""

    def recall(self, key: str, since: float) -> tuple[str, str] | None:
        """(digest, answer) remembered under ``key`` at or after ``since`` (epoch seconds)."""
        ...

    def remembering(
        self, key: str, digest: str, since: float
    ) -> AbstractContextManager[Callable[[str], None]]:
        """One write transaction around a request: every append inside joins it; the function it
        yields records the answer, stored under ``key`` at the commit. ``DuplicateRequestError``
        if another request stored ``key`` first (this one's events are then rolled back)."""
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    """A store that keeps the latest snapshot of each aggregate (SQL stores and Cassandra), in a
    table of its own, with the digest of the event it was taken at."""

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a later one of the same aggregate is kept already (one at the
        same version replaces the kept one: that may be stale, its event since rewritten)."""
        ...

    def latest_snapshot(self, originator_id: UUID) -> Snapshot | None:
        """The latest snapshot of an aggregate, or None."""
        ...
