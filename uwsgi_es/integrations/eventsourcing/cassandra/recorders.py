"""The library's recorders on Cassandra.

``CassandraAggregateRecorder`` (snapshots, and events of applications without a log): one partition
per aggregate (``originator_id`` partition key, ``originator_version`` clustering key); a batch is
one conditional (``IF NOT EXISTS``) batch in that partition, all or nothing; a write that got no
answer is settled by sending it again (``uwsgi_es.stores.cassandra.datastore``). A batch over several
aggregates is refused: Cassandra cannot make writes to several partitions atomic, and half a
batch stored would be worse than none.

``CassandraApplicationRecorder``: the application sequence (notification log) the library's
applications need, with gap-free, contiguous ids, across processes and hosts. Cassandra keeps no
global order and no transaction over partitions, so every write of an application goes through
one serialisation point, a "head" row updated by lightweight transaction (Paxos):

1. *settle*: read the head at SERIAL; if it holds a pending batch (claimed, maybe not yet written),
   write it (idempotent plain writes) and clear it. Every batch up to ``last`` is then stored.
2. *check*: the batch's versions must not exist (and a tracking position must advance): checked
   against what is now stored, which is everything up to ``last``.
3. *claim*: ``UPDATE head SET last = last + n, pending = batch IF last = <last seen>``. One
   partition, one Paxos round: ids ``last+1 .. last+n`` and the batch's content are claimed at
   once, and only if nobody claimed since step 1 (then: back to 1, where a conflict shows).
4. *write* the notifications (bucketed partitions of 1000 ids) and the events, then clear.

A writer that dies after 3 leaves its batch in the head: the next writer or reader writes it in
step 1, so a claimed batch is never lost nor half-visible, and ids never have gaps. The price:
all writers of an application, on every host, take turns on one partition, about three Paxos
rounds per save; fine for a few hundred saves a second, not for more. Aggregate reads and the
version check read the events table at the configured consistency (LOCAL_QUORUM).

``CassandraTrackingRecorder``: one row per upstream application holding the highest processed
notification id, advanced by lightweight transaction only if the new id is higher.
``CassandraProcessRecorder``: the log above, with the tracking position in the same claimed batch.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Sequence
from threading import Event, Thread
from typing import Any, Literal, NamedTuple
from uuid import UUID, uuid4

from cassandra import InvalidRequest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    NotSupportedError,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.runtime import retry
from uwsgi_es.stores.cassandra.datastore import CassandraDatastore, one_partition


class LibraryDatastore(CassandraDatastore):
    """The Cassandra datastore answering in the library's exception types, as its recorders'
    contract says (``ProgrammingError`` for a statement Cassandra refused, else
    ``OperationalError``), with our error, which says more (a lost quorum, a missing table, an
    unknown outcome), as the cause: the hosting answers with ours."""

    def error(self, ours: UwsgiEsError) -> Exception:
        kind = ProgrammingError if isinstance(ours.__cause__, InvalidRequest) else OperationalError
        error = kind(str(ours))
        error.__cause__ = ours
        return error


class Head(NamedTuple):
    """The application's log head: whether it exists yet, the last id claimed, and the batch
    claimed but maybe not yet written (its id and content), if any."""

    exists: bool
    last: int
    pending_id: UUID | None
    pending: bytes | None


BUCKET = 1000  # notification ids per partition of the notifications table
MAX_CLAIMS = 200  # attempts to claim the head before giving up (with jittered back-off)
HEAD_KEY = "log"


class CassandraRecorder:
    def __init__(
        self,
        datastore: CassandraDatastore,
        prefix: str,
        originator_id_type: Literal["uuid", "text"] = "uuid",
    ) -> None:
        self.datastore = datastore
        self.keyspace = datastore.config.keyspace
        self.prefix = prefix
        self.originator_id_type = originator_id_type

    def table(self, name: str) -> str:
        return f"{self.keyspace}.{self.prefix}_{name}"

    def create_table(self) -> None:
        for ddl in self.ddl():
            self.datastore.create_keyspace()
            self.datastore.execute_ddl(ddl)

    def ddl(self) -> list[str]:
        return []

    def originator(self, raw: str) -> UUID | str:
        return UUID(raw) if self.originator_id_type == "uuid" else raw

    @staticmethod
    def key(originator_id: UUID | str) -> str:
        return str(originator_id)


class CassandraAggregateRecorder(CassandraRecorder, AggregateRecorder):
    def __init__(
        self, datastore: CassandraDatastore, prefix: str, purpose: str = "events", **kwargs: Any
    ) -> None:
        super().__init__(datastore, prefix, **kwargs)
        self.events_table = self.table(purpose)

    def ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.events_table} (originator_id text, originator_version bigint, "
            "topic text, state blob, PRIMARY KEY ((originator_id), originator_version)) "
            "WITH CLUSTERING ORDER BY (originator_version ASC)"
        ]

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return None
        _check_one_batch(stored_events)
        originators = {self.key(e.originator_id) for e in stored_events}
        if len(originators) > 1:
            raise NotSupportedError(
                "Cassandra cannot store events of several aggregates atomically in an aggregate "
                "recorder; save them one aggregate at a time, or use the application recorder."
            )
        statement = self._conditional_write(stored_events)
        applied = self.datastore.write_conditionally(
            statement, self._ours(stored_events), _what(stored_events), first=_applied
        )
        if not applied:
            raise IntegrityError(
                f"Version {stored_events[0].originator_version} of {stored_events[0].originator_id} "
                "(or a later one of the batch) is already stored; nothing was stored."
            )
        return None

    def _conditional_write(self, stored_events: Sequence[StoredEvent]) -> Any:
        """One aggregate's events, each ``IF NOT EXISTS``: one statement, or a batch of them."""
        insert = self.datastore.prepare(
            f"INSERT INTO {self.events_table} (originator_id, originator_version, topic, state) "  # noqa: S608
            "VALUES (?, ?, ?, ?) IF NOT EXISTS"
        )
        return one_partition(
            insert,
            [(self.key(e.originator_id), e.originator_version, e.topic, e.state) for e in stored_events],
        )

    def _settle_write(self, statement: Any, stored_events: Sequence[StoredEvent], exc: Exception) -> bool:
        """A conditional write that got no answer (``exc``), settled as ``insert_events`` settles it."""
        return self.datastore.settle_write(statement, self._ours(stored_events), _what(stored_events), exc)

    @staticmethod
    def _ours(stored_events: Sequence[StoredEvent]) -> Any:
        """Whether a conditional write's result means these events are stored: applied, or not
        applied because the rows in the way hold these very events (the library's events carry
        their timestamp, so no other write stores the same bytes)."""
        ours = {(e.originator_version, e.topic, e.state) for e in stored_events}

        def stored(result: Any) -> bool:
            return bool(result.was_applied) or any(
                (row.originator_version, row.topic, bytes(row.state)) in ours for row in result
            )

        return stored

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        cql = f"SELECT originator_version, topic, state FROM {self.events_table} WHERE originator_id = ?"  # noqa: S608
        params: list[Any] = [self.key(originator_id)]
        if gt is not None:
            cql += " AND originator_version > ?"
            params.append(gt)
        if lte is not None:
            cql += " AND originator_version <= ?"
            params.append(lte)
        if desc:
            cql += " ORDER BY originator_version DESC"
        if limit is not None:
            cql += " LIMIT ?"
            params.append(limit)
        return [
            StoredEvent(originator_id, row.originator_version, row.topic, bytes(row.state))
            for row in self.datastore.execute(cql, params)
        ]


def _applied(result: Any) -> bool:
    """A first answer, read as the library wants it: the same event stored twice is a conflict."""
    return bool(result.was_applied)


def _what(stored_events: Sequence[StoredEvent]) -> str:
    return f"a conditional write to {stored_events[0].originator_id}"


def _check_one_batch(stored_events: Sequence[StoredEvent]) -> None:
    seen = {(str(e.originator_id), e.originator_version) for e in stored_events}
    if len(seen) != len(stored_events):
        raise IntegrityError("The batch repeats a version of an aggregate; nothing was stored.")


class CassandraTrackingRecorder(CassandraRecorder, TrackingRecorder):
    """The highest processed notification id per upstream application, advanced by LWT."""

    def __init__(self, datastore: CassandraDatastore, prefix: str, **kwargs: Any) -> None:
        super().__init__(datastore, prefix, **kwargs)
        self.tracking_table = self.table("tracking")

    def ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.tracking_table} "
            "(application_name text PRIMARY KEY, notification_id bigint)"
        ]

    def insert_tracking(self, tracking: Tracking) -> None:
        inserted = self.datastore.execute(
            f"INSERT INTO {self.tracking_table} (application_name, notification_id) "  # noqa: S608
            "VALUES (?, ?) IF NOT EXISTS",
            (tracking.application_name, tracking.notification_id),
        )
        if inserted[0].applied:
            return
        advanced = self.datastore.execute(
            f"UPDATE {self.tracking_table} SET notification_id = ? WHERE application_name = ? "  # noqa: S608
            "IF notification_id < ?",
            (tracking.notification_id, tracking.application_name, tracking.notification_id),
        )
        if not advanced[0].applied:
            raise IntegrityError(
                f"Tracking {tracking.notification_id} of {tracking.application_name!r} is not above "
                "the position already recorded."
            )

    def max_tracking_id(self, application_name: str) -> int | None:
        rows = self.datastore.execute(
            f"SELECT notification_id FROM {self.tracking_table} WHERE application_name = ?",  # noqa: S608
            (application_name,),
            serial=True,
        )
        return int(rows[0].notification_id) if rows else None


class CassandraApplicationRecorder(CassandraAggregateRecorder, ApplicationRecorder):
    """The application sequence, serialised through the head row (see the module docstring)."""

    def __init__(self, datastore: CassandraDatastore, prefix: str, **kwargs: Any) -> None:
        super().__init__(datastore, prefix, "events", **kwargs)
        self.head_table = self.table("head")
        self.notifications_table = self.table("notifications")
        self.process_tracking_table = self.table("process_tracking")

    def ddl(self) -> list[str]:
        return [
            *super().ddl(),
            f"CREATE TABLE IF NOT EXISTS {self.head_table} "
            "(name text PRIMARY KEY, last bigint, pending_id uuid, pending blob)",
            f"CREATE TABLE IF NOT EXISTS {self.notifications_table} (bucket bigint, id bigint, "
            "originator_id text, originator_version bigint, topic text, state blob, batch_id uuid, "
            "PRIMARY KEY ((bucket), id)) WITH CLUSTERING ORDER BY (id ASC)",
            f"CREATE TABLE IF NOT EXISTS {self.process_tracking_table} "
            "(application_name text PRIMARY KEY, notification_id bigint)",
        ]

    # The head -------------------------------------------------------------------------------

    def _read_head(self) -> Head:
        rows = self.datastore.execute(
            f"SELECT last, pending_id, pending FROM {self.head_table} WHERE name = ?",  # noqa: S608
            (HEAD_KEY,),
            serial=True,
        )
        if not rows:
            return Head(exists=False, last=0, pending_id=None, pending=None)
        row = rows[0]
        return Head(True, int(row.last or 0), row.pending_id, bytes(row.pending) if row.pending else None)

    def _settle(self) -> Head:
        """Write the pending batch, if any, and clear it: afterwards every batch up to ``last``
        is stored. Returns the head as it is then (nothing pending)."""
        head = self._read_head()
        if head.pending_id is not None and head.pending is not None:
            self._write(_decode(head.pending), head.pending_id)
            self._clear(head.pending_id)
        return head._replace(pending_id=None, pending=None)

    def _clear(self, batch_id: UUID) -> None:
        with contextlib.suppress(OperationalError):  # written anyway: whoever reads the head next clears it
            self.datastore.execute(
                f"UPDATE {self.head_table} SET pending_id = null, pending = null WHERE name = ? "  # noqa: S608
                "IF pending_id = ?",
                (HEAD_KEY, batch_id),
            )

    def _claim(self, exists: bool, last: int, count: int, batch_id: UUID, pending: bytes) -> bool | None:
        """Claim ids last+1..last+count for the batch; None when a timeout left it unknown."""
        if exists:
            cql = (
                f"UPDATE {self.head_table} SET last = ?, pending_id = ?, pending = ? "  # noqa: S608
                "WHERE name = ? IF last = ?"
            )
            params: tuple[Any, ...] = (last + count, batch_id, pending, HEAD_KEY, last)
        else:
            cql = (
                f"INSERT INTO {self.head_table} (name, last, pending_id, pending) "  # noqa: S608
                "VALUES (?, ?, ?, ?) IF NOT EXISTS"
            )
            params = (HEAD_KEY, count, batch_id, pending)
        return self.datastore.try_write(self.datastore.prepare(cql).bind(params))

    def _claimed(self, last: int, batch_id: UUID) -> bool:
        """After a timed-out claim: was it applied? (Its batch is pending, or already written.)"""
        head = self._read_head()  # a SERIAL read completes any Paxos round in flight
        now, pending_id = head.last, head.pending_id
        if pending_id == batch_id:
            return True
        if now <= last:
            return False
        rows = self.datastore.execute(
            f"SELECT batch_id FROM {self.notifications_table} WHERE bucket = ? AND id = ?",  # noqa: S608
            ((last + 1) // BUCKET, last + 1),
        )
        return bool(rows) and rows[0].batch_id == batch_id

    def _write(self, batch: dict[str, Any], batch_id: UUID) -> None:
        """Write a claimed batch: idempotent, so any process may (re)do it."""
        first = int(batch["first"])
        events = batch["events"]
        self.datastore.execute_many(
            f"INSERT INTO {self.notifications_table} (bucket, id, originator_id, originator_version, "  # noqa: S608
            "topic, state, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ((first + i) // BUCKET, first + i, originator, version, topic, state, batch_id)
                for i, (originator, version, topic, state) in enumerate(events)
            ],
        )
        self.datastore.execute_many(
            f"INSERT INTO {self.events_table} (originator_id, originator_version, topic, state) "  # noqa: S608
            "VALUES (?, ?, ?, ?)",
            list(events),
        )
        tracking = batch.get("tracking")
        if tracking:
            # Written with the tracked position as its write time: a slow writer re-writing an
            # older batch after a newer one loses (last write wins by timestamp), never regresses it.
            self.datastore.execute(
                f"UPDATE {self.process_tracking_table} USING TIMESTAMP ? SET notification_id = ? "  # noqa: S608
                "WHERE application_name = ?",
                (int(tracking[1]), tracking[1], tracking[0]),
            )

    # Writing --------------------------------------------------------------------------------

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        _check_one_batch(stored_events)
        if not stored_events and tracking is None:
            return []
        events = [
            (self.key(e.originator_id), e.originator_version, e.topic, bytes(e.state)) for e in stored_events
        ]
        for attempt in range(MAX_CLAIMS):
            head = self._settle()
            exists, last = head.exists, head.last
            self._check_conflicts(events, tracking)
            batch_id = uuid4()
            pending = _encode(last + 1, events, tracking)
            claimed = self._claim(exists, last, len(events), batch_id, pending)
            if claimed is None:
                claimed = self._claimed(last, batch_id)
            if claimed:
                self._write(_decode(pending), batch_id)
                self._clear(batch_id)
                return list(range(last + 1, last + 1 + len(events)))
            retry.back_off(attempt + 1, cap=0.05)  # yields under gevent, unlike time.sleep
        raise OperationalError(
            f"Could not claim a place in the log of {self.prefix} after {MAX_CLAIMS} tries."
        )

    def _check_conflicts(
        self, events: Sequence[tuple[str, int, str, bytes]], tracking: Tracking | None
    ) -> None:
        versions: dict[str, list[int]] = {}
        for originator, version, _, _ in events:
            versions.setdefault(originator, []).append(version)
        for originator, wanted in versions.items():
            rows = self.datastore.execute(
                f"SELECT originator_version FROM {self.events_table} WHERE originator_id = ? "  # noqa: S608
                "AND originator_version >= ? AND originator_version <= ?",
                (originator, min(wanted), max(wanted)),
            )
            taken = {row.originator_version for row in rows} & set(wanted)
            if taken:
                raise IntegrityError(
                    f"Version {min(taken)} of {originator} is already stored; nothing was stored."
                )
        if tracking is not None:
            current = self._process_tracking(tracking.application_name)
            if current is not None and current >= tracking.notification_id:
                raise IntegrityError(
                    f"Tracking {tracking.notification_id} of {tracking.application_name!r} is not above "
                    f"{current}, already recorded; nothing was stored."
                )

    def _process_tracking(self, application_name: str) -> int | None:
        rows = self.datastore.execute(
            f"SELECT notification_id FROM {self.process_tracking_table} WHERE application_name = ?",  # noqa: S608
            (application_name,),
        )
        return int(rows[0].notification_id) if rows and rows[0].notification_id is not None else None

    # Reading --------------------------------------------------------------------------------

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        last = self._settle().last
        low = (start or 1) if inclusive_of_start or start is None else start + 1
        high = min(stop, last) if stop is not None else last
        found: list[Notification] = []
        while low <= high and len(found) < limit:
            bucket = low // BUCKET
            rows = self.datastore.execute(
                f"SELECT id, originator_id, originator_version, topic, state FROM {self.notifications_table} "  # noqa: S608
                "WHERE bucket = ? AND id >= ? AND id <= ?",
                (bucket, low, min(high, (bucket + 1) * BUCKET - 1)),
            )
            for row in rows:
                if topics and row.topic not in topics:
                    continue
                found.append(
                    Notification(
                        id=row.id,
                        originator_id=self.originator(row.originator_id),
                        originator_version=row.originator_version,
                        topic=row.topic,
                        state=bytes(row.state),
                    )
                )
                if len(found) == limit:
                    break
            low = (bucket + 1) * BUCKET
        return found

    def max_notification_id(self) -> int | None:
        last = self._settle().last
        return last or None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return CassandraSubscription(recorder=self, gt=gt, topics=topics)


class CassandraSubscription(ListenNotifySubscription[CassandraApplicationRecorder]):
    """Cassandra has no LISTEN/NOTIFY: the subscription polls the log every ``POLL_SECONDS``."""

    POLL_SECONDS = 0.1

    def __init__(
        self, recorder: CassandraApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._stopped_ticking = Event()
        self._ticker = Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stopped_ticking.wait(self.POLL_SECONDS):
            self._has_been_notified.set()

    def stop(self) -> None:
        self._stopped_ticking.set()
        super().stop()


class CassandraProcessRecorder(CassandraApplicationRecorder, ProcessRecorder):
    """The log, with the tracking position claimed in the same batch as the events."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self.insert_events([], tracking=tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        self._settle()
        return self._process_tracking(application_name)


def _encode(first: int, events: Sequence[tuple[str, int, str, bytes]], tracking: Tracking | None) -> bytes:
    return json.dumps(
        {
            "first": first,
            "events": [[o, v, t, base64.b64encode(s).decode()] for o, v, t, s in events],
            "tracking": [tracking.application_name, tracking.notification_id] if tracking else None,
        }
    ).encode()


def _decode(pending: bytes) -> dict[str, Any]:
    batch: dict[str, Any] = json.loads(pending)
    batch["events"] = [(o, v, t, base64.b64decode(s)) for o, v, t, s in batch["events"]]
    return batch
