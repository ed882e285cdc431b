"""PostgreSQL's gap-free feed: how a transaction that appends events announces itself, which
position it may write, and where a reader of the feed must stop. SQL text only; nothing here
connects (``schema`` builds the statements, ``store`` installs this with ``uwsgi-es migrate``).

PostgreSQL writers commit concurrently, so a position handed out at insert time may commit after a
later one, and a reader that moved past it would never see it. A position is therefore
``base * 2**20 + place``: ``base`` is a transaction id given to the writing transaction *after* it
announced itself, and the feed shows only positions below a horizon no transaction that may still
commit events is under.

**Writers.** The events table's statement trigger (``uwsgi_es_announce``) runs before every INSERT
into it, whoever sends it (any version of uwsgi_es, a view's session, psql). The first time in a
transaction it takes a shared, transaction-scoped advisory lock (class ``FEED_LOCK_CLASS``, the
backend's pid): the *announcement*, which every session sees in ``pg_locks`` until the transaction
ends. Then it picks the transaction's base, a transaction id given after the announcement: the
transaction's own id, given right then, or, when the transaction had an id already (it wrote
something before its first event, or its first append was rolled back to a savepoint, which also
undoes the announcement), the id of a subtransaction begun for the purpose. The base is kept in the
transaction-local setting ``uwsgi_es.position_base`` (``uwsgi_es_position_base()``), from which
writers compute positions; the row trigger ``uwsgi_es_position`` refuses any other position, so a
writer that computes its own from ``pg_current_xact_id()`` (uwsgi_es before announcements) fails
rather than write where a reader may have passed, when its transaction's id came before its
announcement. An announcing transaction whose session has no idle-in-transaction bound gets
``ANNOUNCED_IDLE_BOUND``: it holds every reader of the feed while it is open.

**Readers** (``horizon``). In one statement: its snapshot T, then the lock table L (read after T).
The horizon is T's xmax, lowered to the oldest transaction T saw in progress, except those that at
L hold their transaction id and no announcement in this database: such a transaction may still
commit events, but only at a base given after a later announcement, at or above T's xmax. Why no
reader can skip an event: an event invisible to T, at base b below the horizon, has b < xmax(T),
so b was given before T, and its transaction announced before that and was still in progress at
T: T saw its id in progress, and at L it either still held its announcement or had released its
id's lock (a committing transaction releases that lock before the announcement), so the horizon is
at most its id, which is at most b. Transactions of other databases (they cannot write this
table) and of this one that append no events never hold the feed.

Locks are matched to their holder by backend pid, not by virtual transaction id: ``pg_locks``
reads each lock's virtual transaction id from its backend without a lock, and a committing
backend resets it, so one read can show its two locks under two ids (a reader then took the
committing transaction for one that appends nothing and skipped its events: a test caught it).
Without the trigger (a database ``uwsgi-es migrate`` has not upgraded yet, or the trigger
disabled or set to fire on replicas only), and on a standby (whose lock table shows none of the
primary's transactions), the horizon is the oldest transaction in progress on the server, as
before.
"""

from __future__ import annotations

POSITION_BITS = 20  # 2**20 events per transaction; 2**32 transactions still fit JavaScript's 2**53
FEED_LOCK_CLASS = 1970759027  # 'uwes': the advisory lock class of announcements (key 2: the pid)
BASE_SETTING = "uwsgi_es.position_base"
BASE = "uwsgi_es_position_base()"  # what writers compute positions from (installed by migrate)
ANNOUNCED_IDLE_BOUND = "60s"  # the longest an announced transaction may idle, unless its session sets one
FRESH_IDS_TABLE = "uwsgi_es_fresh_ids"  # rows written and undone only to be given a transaction id
ANNOUNCE_TRIGGER = "uwsgi_es_announce"
POSITION_TRIGGER = "uwsgi_es_position"
_REFUSED = "UE001"  # the SQLSTATE of a refused position
UNANNOUNCED = "UE002"  # the SQLSTATE of a position asked for where the trigger did not announce
_XID32 = 4294967295  # pg_locks shows 32-bit transaction ids; snapshots show 64-bit ones


def install(table: str) -> list[str]:
    """The statements that make ``table`` announce its writers, all idempotent (the triggers are
    ``triggers``, to create when ``present_triggers`` does not name them)."""
    return [
        f"CREATE UNLOGGED TABLE IF NOT EXISTS {FRESH_IDS_TABLE} (x integer)",
        f"""CREATE OR REPLACE FUNCTION uwsgi_es_unannounced() RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '{UNANNOUNCED}',
    MESSAGE = 'uwsgi_es: this transaction has no position base: the trigger {ANNOUNCE_TRIGGER} of {table} '
      || 'is missing or disabled, so its writers do not announce themselves.',
    HINT = 'Run uwsgi-es migrate.';
END
$$""",
        f"""CREATE OR REPLACE FUNCTION uwsgi_es_position_base() RETURNS bigint LANGUAGE sql STABLE AS $$
SELECT coalesce(nullif(current_setting('{BASE_SETTING}', true), ''), uwsgi_es_unannounced())::bigint
$$""",
        f"""CREATE OR REPLACE FUNCTION {ANNOUNCE_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  own bigint;
  fresh bigint;
BEGIN
  IF coalesce(current_setting('{BASE_SETTING}', true), '') <> '' THEN
    RETURN NULL;  -- announced earlier in this transaction
  END IF;
  PERFORM pg_advisory_xact_lock_shared({FEED_LOCK_CLASS}, pg_backend_pid());
  IF pg_current_xact_id_if_assigned() IS NULL THEN
    fresh := pg_current_xact_id()::text::bigint;  -- given now, after the announcement
  ELSE
    -- Readers may have passed this transaction's id while it was not announced: take one given
    -- now, a subtransaction's (its row is undone; the id stays this transaction's alone).
    own := pg_current_xact_id()::text::bigint;
    BEGIN
      INSERT INTO {FRESH_IDS_TABLE} VALUES (NULL) RETURNING xmin::text::bigint INTO fresh;
      RAISE SQLSTATE 'UE000';
    EXCEPTION WHEN SQLSTATE 'UE000' THEN
      NULL;
    END;
    fresh := own + ((fresh - (own & {_XID32}) + {_XID32} + 1) & {_XID32});  -- with own's epoch
  END IF;
  PERFORM set_config('{BASE_SETTING}', fresh::text, true);
  IF current_setting('idle_in_transaction_session_timeout') = '0' THEN
    PERFORM set_config('idle_in_transaction_session_timeout', '{ANNOUNCED_IDLE_BOUND}', true);
  END IF;
  RETURN NULL;
END
$$""",  # noqa: S608 (constant names only, as everywhere in this module)
        f"""CREATE OR REPLACE FUNCTION uwsgi_es_refuse_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '{_REFUSED}',
    MESSAGE = 'uwsgi_es refuses an event at position ' || coalesce(NEW.id::text, 'NULL')
      || ': a position must be uwsgi_es_position_base() * 2^{POSITION_BITS} + its place ('
      || current_setting('{BASE_SETTING}') || ' in this transaction), a transaction id given after '
      || 'the transaction announced that it appends events; readers may have passed this one.',
    HINT = 'A writer of uwsgi_es from before announcements computes positions from '
      || 'pg_current_xact_id(): restart it with the version that ran uwsgi-es migrate.';
END
$$""",
    ]


def triggers(table: str) -> dict[str, str]:
    """Each trigger's name and the statement that creates it."""
    return {
        ANNOUNCE_TRIGGER: f"CREATE TRIGGER {ANNOUNCE_TRIGGER} BEFORE INSERT ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {ANNOUNCE_TRIGGER}()",
        POSITION_TRIGGER: f"CREATE TRIGGER {POSITION_TRIGGER} BEFORE INSERT ON {table} FOR EACH ROW "
        f"WHEN (NEW.id >> {POSITION_BITS} <> current_setting('{BASE_SETTING}')::bigint) "
        "EXECUTE FUNCTION uwsgi_es_refuse_position()",
    }


def present_triggers(table: str) -> str:
    """A query of the names of this module's triggers that ``table`` has."""
    names = ", ".join(f"'{name}'" for name in triggers(table))
    return f"SELECT tgname FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND tgname IN ({names})"  # noqa: S608


def horizon(table: str) -> str:
    """The lowest position a reader must not reach yet (a scalar subquery; see the docstring)."""
    return f"""(WITH locks AS MATERIALIZED (
  SELECT locktype, coalesce(pid::text, virtualtransaction) AS holder, transactionid::text::bigint AS xid
  FROM pg_locks
  WHERE granted AND (locktype = 'transactionid' AND mode = 'ExclusiveLock'
    OR locktype = 'advisory' AND classid = {FEED_LOCK_CLASS} AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
), quiet AS (
  SELECT xid FROM locks WHERE locktype = 'transactionid' AND holder NOT IN (
    SELECT holder FROM locks WHERE locktype = 'advisory')
)
SELECT CASE WHEN NOT pg_is_in_recovery() AND EXISTS (SELECT FROM pg_trigger
    WHERE tgrelid = '{table}'::regclass AND tgname = '{ANNOUNCE_TRIGGER}' AND tgenabled IN ('O', 'A'))
  THEN least(pg_snapshot_xmax(s)::text::bigint, (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s) AS x
    WHERE x::text::bigint & {_XID32} NOT IN (SELECT xid FROM quiet)))
  ELSE pg_snapshot_xmin(s)::text::bigint END << {POSITION_BITS}
FROM pg_current_snapshot() AS s)"""  # noqa: S608
