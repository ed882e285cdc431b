"""The tables of the SQL store, and the statements built once from them.

``integer_sequenced_items`` holds the events: ``id`` is the position in the global order, and the
unique (originator_id, originator_version) index is the optimistic-concurrency lock. On SQLite the
position is an auto-incremented integer; on PostgreSQL it is the writing transaction's id times
``POSITIONS_PER_TRANSACTION`` plus the event's place among that transaction's appends, and the feed
reads only below the oldest transaction that may still commit events (``postgres_feed``).
``uwsgi_es_heartbeat`` holds one row per host that ``/ready`` rewrites, because only a real write
shows that the store accepts writes (a read-only file, a full disk, a standby server all answer reads).
``uwsgi_es_snapshots`` holds the latest snapshot of each aggregate that has one (uwsgi_es.snapshots).
``uwsgi_es_idempotency`` holds the answer of each request sent with an ``Idempotency-Key``, written in
the same transaction as the request's events, and its digest (method, path, body), until it expires.
``uwsgi_es_tracking`` holds one row per projection: the feed position it has applied, written in
the same transaction as its read model (and, when it stopped at an event or its runner cannot run,
why: uwsgi_es.readside). ``uwsgi_es_parked`` holds the events an operator set aside for a projection
that had stopped at them (``uwsgi-es park``), until they are replayed.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
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
    literal_column,
    select,
    text,
)

from uwsgi_es.stores.base import (
    FEED_CHANNEL,
    HEARTBEAT_TABLE,
    IDEMPOTENCY_TABLE,
    PARKED_TABLE,
    SNAPSHOTS_TABLE,
    TRACKING_TABLE,
)
from uwsgi_es.stores.sqlalchemy.postgres_feed import (
    BASE,
    POSITION_BITS,
    horizon,
    install,
    present_triggers,
    triggers,
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
    # Why it stopped; or, with error_position NULL, why its runner cannot run (the database keeps
    # failing, a table is missing), cleared at the runner's next successful step.
    Column("error", Text(), nullable=True),
)

# An event a projection stopped at, set aside by an operator so that it goes on (its position then
# passes it); replayed, the row goes. What the tracking record said about it is kept here.
parked_table = Table(
    PARKED_TABLE,
    metadata,
    Column("projection", String(200), primary_key=True),
    Column("position", BigInteger(), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("error", Text(), nullable=False),
    Column("parked_at", Float(), nullable=False),  # seconds since the epoch
)

snapshots_table = Table(
    SNAPSHOTS_TABLE,
    metadata,
    Column("originator_id", Uuid(), primary_key=True),
    Column("originator_version", BigInteger(), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("state", Text(), nullable=False),
    # The digest of the stored event at originator_version when the snapshot was taken: the
    # snapshot is used only while that event is stored as it was (NULL: taken before it existed).
    Column("last_event", String(64), nullable=True),
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

# PostgreSQL writers commit concurrently, so a position handed out at insert time may commit after
# a later one: a reader that moved past it would never see it. Positions are therefore made of a
# transaction id the writing transaction was given after it announced itself (in the high bits)
# and the event's place in it, and the feed reads only below the oldest transaction that may still
# commit events (postgres_feed says how, and why no reader skips one). Readers wait only for
# transactions in flight that append events; writers never wait for each other.
POSITIONS_PER_TRANSACTION = 1 << POSITION_BITS
_THIS_TRANSACTION = literal_column(
    f"pg_current_xact_id()::text::bigint * {POSITIONS_PER_TRANSACTION}", BigInteger()
)
# The first position of this transaction (its announcement's base: the table's trigger sets it).
_THIS_BASE = literal_column(f"{BASE} * {POSITIONS_PER_TRANSACTION}", BigInteger())
_FEED_HORIZON = literal_column(horizon(records_table.name), BigInteger())
# One statement for any number of events (arrays, one per column): each takes the next place.
INSERT_PG = text(
    f"INSERT INTO {records_table.name} (id, originator_id, originator_version, topic, state) "  # noqa: S608
    f"SELECT {BASE} * {POSITIONS_PER_TRANSACTION} + :first + e.place - 1, "
    "e.originator_id, e.originator_version, e.topic, e.state "
    "FROM unnest(:originator_ids, :originator_versions, :topics, :states) "
    "WITH ORDINALITY AS e (originator_id, originator_version, topic, state, place) "
    "RETURNING id"
).bindparams(
    bindparam("first", type_=BigInteger()),
    bindparam("originator_ids", type_=ARRAY(Uuid())),
    bindparam("originator_versions", type_=ARRAY(BigInteger())),
    bindparam("topics", type_=ARRAY(Text())),
    bindparam("states", type_=ARRAY(Text())),
)
# The common case, one event, without arrays to build (executed with one row of values only).
INSERT_ONE_PG = (
    insert(records_table)
    .values(id=_THIS_BASE + bindparam("first", type_=BigInteger()))
    .returning(records_table.c.id)
)
SELECT_AFTER_PG = SELECT_AFTER.where(records_table.c.id < _FEED_HORIZON)
SELECT_LAST_ID_PG = SELECT_LAST_ID.where(records_table.c.id < _FEED_HORIZON)
# How many events are stored after a position, counted up to a bound (positions have gaps): on
# PostgreSQL also those the feed does not show yet (above the horizon), which a lag must count.
# Ordered, so that a generic plan of it (a prepared statement) walks the index from the position
# rather than scanning the table.
_after = records_table.c.id > bindparam("after_id")
COUNT_AFTER = select(func.count()).select_from(
    select(records_table.c.id).where(_after).order_by(records_table.c.id).limit(bindparam("cap")).subquery()
)
# Upgrades a table made before positions came from transaction ids (idempotent): the sequence no
# longer numbers events, so a writer of an older uwsgi_es fails (id is NOT NULL) instead of
# writing positions below the ones readers have passed.
UPGRADE_PG = text(f"ALTER TABLE {records_table.name} ALTER COLUMN id DROP DEFAULT")
# (the highest position stored, the lowest one a new transaction can write)
POSITIONS_BEFORE_UPGRADE_PG = select(func.coalesce(func.max(records_table.c.id), 0), _THIS_TRANSACTION)
# Upgrades a table whose writers did not announce themselves (idempotent): the functions, then
# each trigger of TRIGGERS_PG that PRESENT_TRIGGERS_PG does not name.
ANNOUNCING_PG = [text(statement) for statement in install(records_table.name)]
TRIGGERS_PG = {name: text(statement) for name, statement in triggers(records_table.name).items()}
PRESENT_TRIGGERS_PG = text(present_triggers(records_table.name))
# The table lock every INSERT takes: it never waits for another writer, only for a session that
# holds the table in a mode that blocks inserts (SHARE for CREATE INDEX, EXCLUSIVE, ...).
LOCK_AS_APPENDS_DO = text(f"LOCK TABLE {records_table.name} IN ROW EXCLUSIVE MODE")
# PostgreSQL: what a read waiting for a projection sends to wake its runner (which also polls).
NOTIFY = text(f"NOTIFY {FEED_CHANNEL}")
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
    snapshots_table.c.originator_version,
    snapshots_table.c.topic,
    snapshots_table.c.state,
    snapshots_table.c.last_event,
).where(snapshots_table.c.originator_id == bindparam("originator_id"))
# The same upsert on PostgreSQL and SQLite: a snapshot never replaces a later one, and replaces
# one at its own version (which may be stale: taken of events since cut back and written again).
UPSERT_SNAPSHOT = text(
    f"INSERT INTO {SNAPSHOTS_TABLE} (originator_id, originator_version, topic, state, last_event) "  # noqa: S608
    "VALUES (:originator_id, :originator_version, :topic, :state, :last_event) "
    "ON CONFLICT (originator_id) DO UPDATE SET originator_version = excluded.originator_version, "
    "topic = excluded.topic, state = excluded.state, last_event = excluded.last_event "
    f"WHERE {SNAPSHOTS_TABLE}.originator_version <= excluded.originator_version"
).bindparams(bindparam("originator_id", type_=Uuid()))
# Upgrades a snapshots table made before snapshots remembered their event (idempotent: run when
# the column is missing). Its rows keep NULL, and are ignored until their aggregate's next snapshot.
ADD_SNAPSHOT_DIGEST = text(f"ALTER TABLE {SNAPSHOTS_TABLE} ADD COLUMN last_event VARCHAR(64)")
