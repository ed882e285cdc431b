"""The tables of the SQL store, and the statements built once from them.

``integer_sequenced_items`` holds the events: ``id`` is the position in the global order, and the
unique (originator_id, originator_version) index is the optimistic-concurrency lock.
``uwsgi_es_heartbeat`` holds one row per host that ``/ready`` rewrites, because only a real write
shows that the store accepts writes (a read-only file, a full disk, a standby server all answer reads).
``uwsgi_es_snapshots`` holds the latest snapshot of each aggregate that has one (uwsgi_es.snapshots).
``uwsgi_es_idempotency`` holds the answer of each request sent with an ``Idempotency-Key``, written in
the same transaction as the request's events, and its digest (method, path, body), until it expires.
``uwsgi_es_tracking`` holds one row per projection: the feed position it has applied, written in
the same transaction as its read model (and, when it stopped at an event, why: uwsgi_es.readside).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
)

from uwsgi_es.stores.base import (
    FEED_CHANNEL,
    HEARTBEAT_TABLE,
    IDEMPOTENCY_TABLE,
    SNAPSHOTS_TABLE,
    TRACKING_TABLE,
)

metadata = MetaData()

records_table = Table(
    "integer_sequenced_items",
    metadata,
    # SQLite only auto-increments an INTEGER PRIMARY KEY, so the big integer becomes INTEGER there.
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("originator_id", Uuid(), nullable=False),
    Column("originator_version", BigInteger(), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("state", Text(), nullable=False),
    Index("integer_sequenced_items_originator", "originator_id", "originator_version", unique=True),
)

heartbeat_table = Table(
    HEARTBEAT_TABLE,
    metadata,
    Column("host", String(200), primary_key=True),
    Column("beats", BigInteger(), nullable=False),
)

tracking_table = Table(
    TRACKING_TABLE,
    metadata,
    Column("projection", String(200), primary_key=True),
    Column("position", BigInteger(), nullable=False),
    # Set while the projection is stopped at an event it cannot process; cleared when it passes it.
    Column("error_position", BigInteger(), nullable=True),
    Column("error_topic", String(255), nullable=True),
    Column("error", Text(), nullable=True),
)

snapshots_table = Table(
    SNAPSHOTS_TABLE,
    metadata,
    Column("originator_id", Uuid(), primary_key=True),
    Column("originator_version", BigInteger(), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("state", Text(), nullable=False),
)

idempotency_table = Table(
    IDEMPOTENCY_TABLE,
    metadata,
    Column("key", String(255), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("answer", Text(), nullable=False),
    Column("created", Float(), nullable=False),  # epoch seconds: expired rows are swept
    Index(f"{IDEMPOTENCY_TABLE}_created", "created"),
)

# Built once: constructing statements per call costs more than running them on SQLite.
_columns = (
    records_table.c.originator_version,
    records_table.c.topic,
    records_table.c.state,
    records_table.c.id,
)
SELECT_ONE = (
    select(*_columns)
    .where(records_table.c.originator_id == bindparam("originator_id"))
    .order_by(records_table.c.originator_version)
)
SELECT_ONE_AFTER = (
    select(*_columns)
    .where(
        records_table.c.originator_id == bindparam("originator_id"),
        records_table.c.originator_version > bindparam("after_version"),
    )
    .order_by(records_table.c.originator_version)
    .limit(bindparam("limit"))
)
SELECT_AFTER = (
    select(
        records_table.c.originator_id,
        records_table.c.originator_version,
        records_table.c.topic,
        records_table.c.state,
        records_table.c.id,
    )
    .where(records_table.c.id > bindparam("after_id"))
    .order_by(records_table.c.id)
    .limit(bindparam("limit"))
)
SELECT_ANY = select(records_table.c.id).limit(1)
INSERT = insert(records_table).returning(records_table.c.id, sort_by_parameter_order=True)
SELECT_LAST_ID = select(func.max(records_table.c.id))
# PostgreSQL: wakes the projection runners when the append commits (a wake-up only: they also poll).
NOTIFY = text(f"NOTIFY {FEED_CHANNEL}")
LOCK_FOR_APPEND = text(f"LOCK TABLE {records_table.name} IN EXCLUSIVE MODE")
# The same upsert on PostgreSQL and SQLite (3.24+): one row per host, rewritten.
HEARTBEAT = text(
    f"INSERT INTO {HEARTBEAT_TABLE} (host, beats) VALUES (:host, 1) "  # noqa: S608 (a constant name)
    f"ON CONFLICT (host) DO UPDATE SET beats = {HEARTBEAT_TABLE}.beats + 1"
)
SELECT_ANSWER = select(idempotency_table.c.digest, idempotency_table.c.answer).where(
    idempotency_table.c.key == bindparam("key"), idempotency_table.c.created >= bindparam("since")
)
INSERT_ANSWER = insert(idempotency_table)
DELETE_EXPIRED_KEY = delete(idempotency_table).where(
    idempotency_table.c.key == bindparam("key"), idempotency_table.c.created < bindparam("since")
)
DELETE_EXPIRED = delete(idempotency_table).where(idempotency_table.c.created < bindparam("since"))
SELECT_SNAPSHOT = select(
    snapshots_table.c.originator_version, snapshots_table.c.topic, snapshots_table.c.state
).where(snapshots_table.c.originator_id == bindparam("originator_id"))
# The same upsert on PostgreSQL and SQLite: a snapshot never replaces a later one.
UPSERT_SNAPSHOT = text(
    f"INSERT INTO {SNAPSHOTS_TABLE} (originator_id, originator_version, topic, state) "  # noqa: S608
    "VALUES (:originator_id, :originator_version, :topic, :state) "
    "ON CONFLICT (originator_id) DO UPDATE SET originator_version = excluded.originator_version, "
    "topic = excluded.topic, state = excluded.state "
    f"WHERE {SNAPSHOTS_TABLE}.originator_version < excluded.originator_version"
).bindparams(bindparam("originator_id", type_=Uuid()))
