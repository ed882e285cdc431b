"""A blue-green rebuild of a projection's read model (``uwsgi-es rebuild NAME``): a new read model is
filled from the first event beside the one readers use, by the projection's code as deployed, while
the old one keeps serving and its runner keeps following the feed; once the new one has caught up,
one transaction puts it in the old one's place.

Where the new read model is built, so that the projection's own statements (Core or text, with
unqualified table names) reach it unchanged:

- **PostgreSQL**: a schema of its own, ``uwsgi_es_rebuild_<name>``, first on the rebuild's
  ``search_path`` (set in each transaction, so a transaction pooler is no trouble); the events and
  the feed's functions are found further down the path. The switch drops the old tables and moves
  the new ones into their schema (``ALTER TABLE ... SET SCHEMA``): no copy, whatever the size.
- **SQLite**: a file beside the database (``<database>.rebuild-<name>``), opened as the rebuild's
  main database with the live one attached: SQLite looks in main first, so the projection's tables
  and tracking record are the new ones and the events the live ones. Its transactions are deferred
  and write only that file, so writers never wait for the fill. SQLite cannot move a table to
  another file: the switch replaces the live tables by a copy (one ``INSERT ... SELECT`` per table,
  in the write transaction, so writers wait for it).

**The switch** is one transaction that holds the live tracking record's lock (the live runner waits
between two of its batches): it applies the events stored since the fill's last batch (up to a
batch that is not full: it never chases writers while it holds the lock), drops the
old tables, puts the new ones in their place, moves the live position to the new model's, and
forgets the projection's parked events (the rebuild applied them like the others). Readers see the
old model until the commit and the new one after it, never an empty or half-filled one; the live
runner then goes on from the new position, on the new tables. The tables are replaced whole, so a
new release may change their shape.

**One at a time**: a second rebuild of a projection is refused while the first holds its lock (an
advisory lock on a session of its own on PostgreSQL, through ``UWSGI_ES_LISTEN_URL`` behind a
pooler; a lock on a file beside the database on SQLite), released when its process ends, however
it ends. A rebuild that fails or is interrupted leaves the live read model as it was; the next one
starts over. An event the projection fails on stops the rebuild (nothing is parked in a rebuild).

The new model is built by the code of the process that runs the command: run it from the release
the runners run.
"""

from __future__ import annotations

import abc
import dataclasses
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import DropTable

from uwsgi_es.application import Application
from uwsgi_es.errors import ProjectionOperationError, ProjectionStoppedError, StoreUnavailableError
from uwsgi_es.readside.projection import Projection
from uwsgi_es.readside.runner import ProjectionRunner, StoppedAtEvent, feed_store, stopped_message
from uwsgi_es.readside.status import projection_named
from uwsgi_es.readside.tracking import advance, lock, read
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import ProjectionFeed, StoredRecord
from uwsgi_es.stores.sqlalchemy.engine import WRITE, create_engine_from_settings, is_pooled, translate
from uwsgi_es.stores.sqlalchemy.schema import parked_table, tracking_table
from uwsgi_es.stores.sqlalchemy.store import SQLAlchemyRecordStore

REBUILD_LOCK_CLASS = 1970692705  # the advisory lock class of rebuilds (key 2: hashtext(name))
SHADOW_PREFIX = "uwsgi_es_rebuild_"
_LIVE = "live"  # SQLite: the schema name the live database is attached under


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild did."""

    name: str
    position: int  # where the new read model (now the live one) stands
    events: int  # events the rebuild applied (fill and switch)
    rows: int  # rows of the new read model
    fill_seconds: float
    switch_seconds: float  # how long the switch held the live tracking record (and SQLite's writers)


def rebuild(app: Application, name: str, progress: Callable[[int, int], None] | None = None) -> Rebuilt:
    """Fill a new read model of the projection ``name`` beside the live one and switch to it when
    it has caught up. ``progress(events applied, position)`` after each batch of the fill."""
    projection = projection_named(app, name)
    store = feed_store(app, "uwsgi-es rebuild")
    with_schema = [t.fullname for t in projection.metadata.sorted_tables if t.schema is not None]
    if with_schema:
        raise ProjectionOperationError(
            f"The projection {name!r} names a schema for {', '.join(with_schema)}: a rebuild builds "
            "the new read model in a schema (PostgreSQL) or file (SQLite) of its own, which only "
            "reaches tables named without one. Leave the schema to the connection (search_path)."
        )
    shadow = _shadow_for(store, app.settings, name)
    with shadow.exclusive():
        try:
            shadow.create(projection)
            runner = ProjectionRunner(app, projection(), feed=shadow)
            started = time.monotonic()
            applied = _fill(runner, progress)
            filled = time.monotonic()
            applied += shadow.switch(runner, projection)
        except BaseException:
            with suppress(Exception):  # the error that stopped it says more than a failed cleanup
                shadow.drop()
            raise
        shadow.drop()
    return Rebuilt(name, runner.position, applied, shadow.rows, filled - started, shadow.held)


def _fill(runner: ProjectionRunner, progress: Callable[[int, int], None] | None) -> int:
    """Apply batches to the new read model until one is not full (caught up, up to the switch)."""
    applied = 0
    while True:
        try:
            count = runner.step()
        except ProjectionStoppedError as exc:
            raise _rebuild_stopped(runner.name, str(exc)) from exc
        applied += count
        if progress is not None:
            progress(applied, runner.position)
        if count < runner.batch:
            return applied


def _rebuild_stopped(name: str, stopped: str) -> ProjectionOperationError:
    return ProjectionOperationError(
        f"The rebuild of {name!r} stopped: {stopped} The live read model is as it was; fix the "
        "code and rebuild again (or rebuild from the release that has the fix)."
    )


@contextmanager
def _on_live(connection: Connection, schema: str) -> Iterator[None]:
    """Statements with unqualified tables go to the live ones (``schema``) for a while."""
    connection.execution_options(schema_translate_map={None: schema})
    try:
        yield
    finally:
        connection.execution_options(schema_translate_map=None)


class _Shadow(abc.ABC):
    """Where the new read model is built: a ``ProjectionFeed`` for the rebuild's runner whose engine
    reaches the new tables first and the events behind them."""

    def __init__(self, store: ProjectionFeed, settings: Settings, name: str) -> None:
        self.store = store
        self.settings = settings
        self.name = name
        self.rows = 0
        self.held = 0.0  # seconds the switch held the live tracking record (SQLite: the writers too)
        self._engine: Engine | None = None

    # What the runner asks of its feed: the events are the live store's.
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    def select_all(self, after_id: int, limit: int) -> list[StoredRecord]:
        return self.store.select_all(after_id, limit)

    def last_position(self) -> int:
        return self.store.last_position()

    def count_after(self, position: int, cap: int) -> int:
        return self.store.count_after(position, cap)

    def wake_projections(self, connection: Connection) -> None:
        connection.rollback()

    def describe(self) -> str:
        return f"the rebuild of {self.name!r} in {self.store.describe()}"

    def scrub(self, message: object) -> str:
        return self.store.scrub(message)

    def unavailable(self, error: object) -> StoreUnavailableError:
        return self.store.unavailable(error)

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # The rebuild's own steps.
    def switch(self, runner: ProjectionRunner, projection: type[Projection]) -> int:
        """Catch up the last events and put the new tables in the live ones' place, in one
        transaction under the live tracking record's lock; the events applied."""
        applied = 0
        try:
            with self.engine.connect() as connection:
                connection.execution_options(**{WRITE: True})  # SQLite: both files' write lock
                with connection.begin():
                    locked = time.monotonic()
                    with _on_live(connection, self.live_schema):
                        lock(connection, self.name)
                    # Up to a batch that is not full: the feed's end then. Later events are the
                    # live runner's, after the switch; chasing them here would hold its lock.
                    while len(records := runner.step_in(connection)) == runner.limit:
                        applied += len(records)
                    applied += len(records)
                    position = read(connection, [self.name])[self.name].position
                    with _on_live(connection, self.live_schema):
                        for table in reversed(projection.metadata.sorted_tables):
                            connection.execute(DropTable(table, if_exists=True))
                    self._move_in(connection, projection)
                    with _on_live(connection, self.live_schema):
                        advance(connection, self.name, position)
                        connection.execute(delete(parked_table).where(parked_table.c.projection == self.name))
                self.held = time.monotonic() - locked
            with self.store.engine.connect() as connection:  # counted after: the switch holds no longer
                self.rows = sum(
                    int(connection.execute(select(func.count()).select_from(t)).scalar_one())
                    for t in projection.metadata.sorted_tables
                )
        except StoppedAtEvent as stopped:
            record = stopped.record
            message = stopped_message(self.name, record.id or 0, record.topic, type(stopped.cause).__name__)
            raise _rebuild_stopped(self.name, message) from stopped.cause
        except DBAPIError as exc:
            raise translate(exc, self.describe(), self.scrub) from exc
        return applied

    @property
    @abc.abstractmethod
    def live_schema(self) -> str:
        """The schema name the live tables are reached by from the rebuild's connections."""

    @abc.abstractmethod
    def _create_engine(self) -> Engine: ...

    @abc.abstractmethod
    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the projection's rebuild lock, or refuse: another rebuild of it is running."""

    @abc.abstractmethod
    def create(self, projection: type[Projection]) -> None:
        """A new, empty read model and tracking record (one left by an interrupted rebuild gone)."""

    @abc.abstractmethod
    def _move_in(self, connection: Connection, projection: type[Projection]) -> None:
        """Put the new tables where the dropped live ones were (in the switch's transaction)."""

    @abc.abstractmethod
    def drop(self) -> None:
        """Remove what is left of the new read model's place."""

    def _refused(self, holder: str) -> ProjectionOperationError:
        return ProjectionOperationError(
            f"The projection {self.name!r} is being rebuilt already ({holder}); one rebuild of a "
            "projection at a time. Wait for it to switch, or stop it (the live read model stays)."
        )


class _PostgresShadow(_Shadow):
    def __init__(self, store: ProjectionFeed, settings: Settings, name: str) -> None:
        super().__init__(store, settings, name)
        self.schema = SHADOW_PREFIX + re.sub(r"[^a-z0-9_]", "_", name.lower())[: 63 - len(SHADOW_PREFIX)]
        with store.engine.connect() as connection:
            self._live_schema = str(connection.execute(text("SELECT current_schema()")).scalar_one())
            live_path = str(connection.execute(text("SHOW search_path")).scalar_one())
            connection.rollback()
        self._path = f"{self._quote(self.schema)}, {live_path}"

    @property
    def live_schema(self) -> str:
        return self._live_schema

    def _quote(self, identifier: str) -> str:
        return str(self.store.engine.dialect.identifier_preparer.quote_identifier(identifier))

    def _create_engine(self) -> Engine:
        engine = create_engine_from_settings(dataclasses.replace(self.settings, pool_size=1, max_overflow=1))
        path = self._path

        @event.listens_for(engine, "begin")
        def _shadow_first(connection: Connection) -> None:
            connection.exec_driver_sql(f"SET LOCAL search_path TO {path}")

        return engine

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        settings = dataclasses.replace(
            self.settings,
            database_url=self.settings.listen_url or self.settings.database_url,
            pool_size=1,
            max_overflow=0,
        )
        engine = create_engine_from_settings(settings)
        try:
            with engine.connect() as connection:
                if is_pooled(connection):
                    raise ProjectionOperationError(
                        "A rebuild holds a session lock while it runs, which a transaction pooler "
                        "(PgBouncer) does not keep: set UWSGI_ES_LISTEN_URL to a direct connection "
                        "to PostgreSQL (the one the runners LISTEN on)."
                    )
                taken = connection.execute(
                    text("SELECT pg_try_advisory_lock(:class, hashtext(:name))"),
                    {"class": REBUILD_LOCK_CLASS, "name": self.name},
                ).scalar_one()
                connection.commit()  # the lock is the session's: it outlives the transaction
                if not taken:
                    raise self._refused("another session holds its rebuild lock")
                yield  # the session ends with the connection, and the lock with it
        finally:
            engine.dispose()

    def create(self, projection: type[Projection]) -> None:
        schema = self._quote(self.schema)
        with self.store.engine.connect() as connection, connection.begin():
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {schema}"))
            connection.execute(text(f"SET LOCAL search_path TO {schema}"))
            # Unqualified, created in the first schema of the path; no check first: the live
            # tables of the same names would be found further down it.
            tracking_table.create(connection, checkfirst=False)
            projection.metadata.create_all(connection, checkfirst=False)

    def _move_in(self, connection: Connection, projection: type[Projection]) -> None:
        for table in projection.metadata.sorted_tables:
            connection.execute(
                text(
                    f"ALTER TABLE {self._quote(self.schema)}.{self._quote(table.name)} "
                    f"SET SCHEMA {self._quote(self._live_schema)}"
                )
            )

    def drop(self) -> None:
        self.close()
        with self.store.engine.connect() as connection, connection.begin():
            connection.execute(text(f"DROP SCHEMA IF EXISTS {self._quote(self.schema)} CASCADE"))


class _SqliteShadow(_Shadow):
    def __init__(self, store: ProjectionFeed, settings: Settings, name: str, database: Path) -> None:
        super().__init__(store, settings, name)
        self.database = database
        self.path = database.with_name(f"{database.name}.rebuild-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}")

    @property
    def live_schema(self) -> str:
        return _LIVE

    def _create_engine(self) -> Engine:
        engine = create_engine(URL.create("sqlite", database=str(self.path)), pool_size=1)
        busy_timeout = int(self.settings.sqlite_busy_timeout_ms)
        database = str(self.database)

        @event.listens_for(engine, "connect")
        def _attach_live(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            dbapi_connection.isolation_level = None  # "begin" below decides the BEGIN
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout={busy_timeout}")
                # A file thrown away unless it is switched in: no fsync, journal in memory.
                cursor.execute("PRAGMA journal_mode=MEMORY")
                cursor.execute("PRAGMA synchronous=OFF")
                cursor.execute(f"ATTACH DATABASE ? AS {_LIVE}", (database,))
                cursor.execute(f"PRAGMA {_LIVE}.synchronous=FULL")  # the switch writes it as writers do
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            # The fill writes only the new file: deferred, so the live one's writers never wait.
            # The switch takes both files' write lock at once (IMMEDIATE).
            immediate = connection.get_execution_options().get(WRITE)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        descriptor = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refused(f"a process holds {self.path}.lock") from None
            yield
        finally:
            os.close(descriptor)  # the lock goes with it

    def create(self, projection: type[Projection]) -> None:
        self.drop()
        with self.write_transaction() as connection:
            tracking_table.create(connection, checkfirst=False)
            projection.metadata.create_all(connection, checkfirst=False)

    def _move_in(self, connection: Connection, projection: type[Projection]) -> None:
        with _on_live(connection, _LIVE):
            projection.metadata.create_all(connection, checkfirst=False)
        quote = connection.dialect.identifier_preparer.quote_identifier
        for table in projection.metadata.sorted_tables:
            name = quote(table.name)
            # Identifiers the dialect quoted; no value in the statement.
            connection.exec_driver_sql(f"INSERT INTO {_LIVE}.{name} SELECT * FROM main.{name}")  # noqa: S608

    def drop(self) -> None:
        self.close()
        for leftover in (self.path, Path(f"{self.path}-journal")):
            leftover.unlink(missing_ok=True)


def _shadow_for(store: ProjectionFeed, settings: Settings, name: str) -> _Shadow:
    dialect = store.engine.dialect.name
    if dialect == "postgresql":
        return _PostgresShadow(store, settings, name)
    path = store.path if isinstance(store, SQLAlchemyRecordStore) else None
    if dialect == "sqlite" and path is not None:
        return _SqliteShadow(store, settings, name, path)
    raise ProjectionOperationError(
        f"A rebuild needs a second place beside the live read model, which {store.describe()} "
        "does not offer (SQLite in memory): use `uwsgi-es reset NAME --yes` there."
    )
