"""`make bench-scale`: what a deposit, a read, a feed page, a projection's catch-up, `uwsgi-es
migrate` and the disk cost as the events table grows (BENCH_SCALE_SIZES: 10^4, 10^6, 10^7 events),
on SQLite and PostgreSQL; and a read of one account of 10^5 events with and without a snapshot.

The events are generated inside the database (a recursive CTE on SQLite, generate_series on
PostgreSQL), not through HTTP: accounts of STREAM events each (an Opened, then deposits), in the
example's own stored form, so the API reads them as its own. The table grows from one size to the
next; each size is measured as it stands:

- deposits and reads of 10-event accounts spread over the whole table, by wrk against the example
  under the bench's uWSGI options, with the per-worker aggregate cache off (so a read reads the
  store, not the cache); each with how busy the server and wrk were;
- the first and the last feed page (`GET /events?after=...&limit=100`), one fixed path per run;
- the balances projection catching up on the last CATCH_UP events (in process), its read model
  holding a row for every account before them, as it would;
- `uwsgi-es migrate` on the existing table (in process: what a deploy script waits for);
- the events table and its indexes on disk, per million events.

The section it writes into BENCHMARKS.md sits between markers that `make bench` keeps.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench.contenders import PROJECT, Contender, start
from bench.measure import SECONDS, WARMUP
from bench.wrk import Run, script, wrk, wrk_path
from uwsgi_es.cli import steps
from uwsgi_es.example.balances import Balances
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.readside import ProjectionRunner
from uwsgi_es.settings import Settings
from uwsgi_es.testing import PostgresServer

SIZES = [int(n) for n in os.environ.get("BENCH_SCALE_SIZES", "10000,1000000,10000000").split(",")]
STREAM = 10  # events per generated account
LONG_STREAM = 100_000  # the one long account (its last event comes through the API)
CATCH_UP = 20_000
READ_ACCOUNTS = 1_000  # 10-event accounts read, spread over the table
WRITE_ACCOUNTS = 100
TOPIC = "uwsgi_es.example.domain:BankAccount"
OPENED = f'{{"timestamp":"2026-01-01T00:00:00Z","originator_topic":"{TOPIC}","owner":"scale"}}'
DEPOSITED = '{"timestamp":"2026-01-01T00:00:00Z","amount":1}'
# No cache: a read must read the store. Snapshots as shipped (every 100 events: none of a
# 10-event account).
SERVER_ENV = {"UWSGI_ES_AGGREGATE_CACHE": "0"}


@dataclass
class Point:
    store: str
    events: int
    deposits_per_s: float
    deposit_bottleneck: str
    reads_per_s: float
    read_bottleneck: str
    first_page_per_s: float
    last_page_per_s: float
    catch_up_per_s: float
    migrate_s: float
    table_mb_per_million: float
    index_mb_per_million: float


def account_id(n: int) -> str:
    """The generated account number ``n`` as the UUID the database stores (the same on both)."""
    return f"{n:032x}"


def uuid_text(n: int) -> str:
    hexa = account_id(n)
    return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}"


# Generation, in SQL: events ``first``..``last`` of the generated sequence, the n-th being event
# (n - 1) % stream + 1 of account (n - 1) // stream + 1.
_EVENT = """(n - 1) % :stream + 1,
       CASE WHEN (n - 1) % :stream = 0 THEN :opened_topic ELSE :deposited_topic END,
       CASE WHEN (n - 1) % :stream = 0 THEN :opened ELSE :deposited END"""
SQLITE_FILL = (
    "WITH RECURSIVE g(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM g WHERE n < :last) "  # noqa: S608 (constants)
    "INSERT INTO integer_sequenced_items (originator_id, originator_version, topic, state) "
    f"SELECT printf('%032x', (n - 1) / :stream + 1), {_EVENT} FROM g"
)
# PostgreSQL: positions below any a transaction will write (its id times 2**20), with the
# table's position triggers off for the load (they admit only the writing transaction's own).
POSTGRES_FILL = (
    "INSERT INTO integer_sequenced_items (id, originator_id, originator_version, topic, state) "  # noqa: S608 (constants)
    f"SELECT n, lpad(to_hex((n - 1) / :stream + 1), 32, '0')::uuid, {_EVENT} "
    "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n"
)
_VALUES = {
    "opened_topic": f"{TOPIC}.Opened",
    "deposited_topic": f"{TOPIC}.Deposited",
    "opened": OPENED,
    "deposited": DEPOSITED,
}


def fill(engine: Engine, first: int, last: int, stream: int = STREAM) -> None:
    """Generated events ``first``..``last``, in accounts of ``stream`` events."""
    postgres = engine.dialect.name == "postgresql"
    values = {**_VALUES, "stream": stream}
    with engine.begin() as connection:
        if postgres:
            connection.execute(text("ALTER TABLE integer_sequenced_items DISABLE TRIGGER USER"))
            connection.execute(text(POSTGRES_FILL), {**values, "first": first, "last": last})
            connection.execute(text("ALTER TABLE integer_sequenced_items ENABLE TRIGGER USER"))
        else:
            step = 1_000_000  # keep each statement's temporary rows bounded
            for low in range(first, last + 1, step):
                connection.execute(
                    text(SQLITE_FILL), {**values, "first": low, "last": min(last, low + step - 1)}
                )
    if postgres:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE integer_sequenced_items"))


def position_of(engine: Engine, generated: int) -> int:
    """The feed position of the ``generated``-th generated event (SQLite numbers them itself)."""
    if engine.dialect.name == "postgresql":
        return generated
    with engine.connect() as connection:
        account, version = (generated - 1) // STREAM + 1, (generated - 1) % STREAM + 1
        return int(
            connection.execute(
                text(
                    "SELECT id FROM integer_sequenced_items WHERE originator_id = :a AND originator_version = :v"
                ),
                {"a": account_id(account), "v": version},
            ).scalar_one()
        )


def prepare_catch_up(engine: Engine, events: int) -> None:
    """The balances as they stand before the last CATCH_UP generated events, and the tracking
    record there."""
    before = events - catch_up_events(events)
    postgres = engine.dialect.name == "postgresql"
    account = "lpad(to_hex(n), 32, '0')::uuid" if postgres else "printf('%032x', n)"
    series = (
        "generate_series(1, :accounts) AS n"
        if postgres
        else "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :accounts) SELECT n FROM s)"
    )
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM balances"))
        connection.execute(text("DELETE FROM uwsgi_es_tracking"))
        connection.execute(
            text(
                f"INSERT INTO balances (account_id, owner, balance, version) SELECT {account}, 'scale', "  # noqa: S608
                f"{STREAM - 1}, {STREAM} FROM {series}"
            ),
            {"accounts": before // STREAM},
        )
        connection.execute(
            text("INSERT INTO uwsgi_es_tracking (projection, position) VALUES ('balances', :p)"),
            {"p": position_of(engine, before)},
        )


def catch_up_events(events: int) -> int:
    """CATCH_UP, or half a small table (whole accounts)."""
    return min(CATCH_UP, events // 2 // STREAM * STREAM)


def catch_up_rate(url: str, events: int) -> float:
    engine = create_engine(url)
    try:
        prepare_catch_up(engine, events)
    finally:
        engine.dispose()
    with BankAccounts.from_settings(Settings(database_url=url)) as app:
        started = time.perf_counter()
        applied = ProjectionRunner(app, Balances()).catch_up()
        rate = applied / (time.perf_counter() - started)
    assert applied >= catch_up_events(events), f"applied {applied} of {catch_up_events(events)}"
    return rate


def migrate_seconds(url: str) -> float:
    started = time.perf_counter()
    steps.migrate(Settings(database_url=url), BankAccounts)
    return time.perf_counter() - started


def sizes_mb(engine: Engine, sqlite_file: Path | None) -> tuple[float, float]:
    """(table, indexes) of the events table, in MB."""
    with engine.connect() as connection:
        if sqlite_file is None:
            table, indexes = connection.execute(
                text(
                    "SELECT pg_table_size('integer_sequenced_items'), pg_indexes_size('integer_sequenced_items')"
                )
            ).one()
            return table / 1e6, indexes / 1e6
    with sqlite3.connect(sqlite_file) as db:  # dbstat: the pages of each table and index
        rows = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    return rows["integer_sequenced_items"] / 1e6, rows["integer_sequenced_items_originator"] / 1e6


def timed_runs(contender: Contender, events: int, engine: Engine) -> dict[str, Run]:
    """wrk's runs against the server as the table stands (the median of three each): 10-event
    reads, the first and the last feed page, deposits."""
    server = contender.server
    accounts = events // STREAM
    spread = [1 + (i * accounts) // READ_ACCOUNTS for i in range(READ_ACCOUNTS)]
    writes = [1 + (i * accounts) // WRITE_ACCOUNTS for i in range(WRITE_ACCOUNTS)]
    reads = script("GET", [f"/accounts/{uuid_text(a)}" for a in spread])
    deposits = script("POST", [f"/accounts/{uuid_text(a)}/deposits" for a in writes], '{"amount": 1}')
    last_page = position_of(engine, events - 100)
    return {
        "reads": _median_run(lambda seconds: wrk(server, reads, seconds)),
        "first page": _median_run(lambda seconds: wrk_path(server, "/events?after=0&limit=100", seconds)),
        "last page": _median_run(
            lambda seconds: wrk_path(server, f"/events?after={last_page}&limit=100", seconds)
        ),
        "deposits": _median_run(lambda seconds: wrk(server, deposits, seconds)),  # last: they add events
    }


def _median_run(run: Callable[[int], Run]) -> Run:
    run(WARMUP)
    return sorted((run(SECONDS) for _ in range(3)), key=lambda r: r.rate)[1]


def measure_store(store: str, url: str, sqlite_file: Path | None, logs: Path) -> list[Point]:
    engine = create_engine(url)
    points = []
    generated = 0
    try:
        for size in SIZES:
            started = time.perf_counter()
            fill(engine, generated + 1, size)
            generated = size
            print(f"{store}: {size} events generated in {time.perf_counter() - started:.0f}s", flush=True)
            migrate_s = migrate_seconds(url)
            table, indexes = sizes_mb(engine, sqlite_file)
            catch_up = catch_up_rate(url, size)
            env = {"UWSGI_ES_DATABASE_URL": url, **SERVER_ENV}
            contender = Contender(
                "uwsgi_es",
                start("uwsgi_es.wsgi:application", env, logs / f"{store}-{size}", wait_for="ready"),
            )
            try:
                runs = timed_runs(contender, size, engine)
            finally:
                contender.server.stop()
            point = Point(
                store,
                size,
                runs["deposits"].rate,
                runs["deposits"].bottleneck,
                runs["reads"].rate,
                runs["reads"].bottleneck,
                runs["first page"].rate,
                runs["last page"].rate,
                catch_up,
                migrate_s,
                table / size * 1e6,
                indexes / size * 1e6,
            )
            print(point, flush=True)
            points.append(point)
    finally:
        engine.dispose()
    return points


def long_stream(url: str, logs: Path) -> dict[str, float]:
    """One account of LONG_STREAM events: a read's latency (median of 5) replaying them all, and
    reading the snapshot its last deposit took (every 100 events, as shipped) plus nothing after."""
    engine = create_engine(url)
    try:
        fill(engine, 1, LONG_STREAM - 1, stream=LONG_STREAM)  # its last event comes through the API
    finally:
        engine.dispose()
    account = uuid_text(1)
    figures = {}
    for label, env in (
        ("without", {"UWSGI_ES_SNAPSHOT_INTERVAL": "0", **SERVER_ENV}),
        ("with", {"UWSGI_ES_SNAPSHOT_INTERVAL": "100", **SERVER_ENV}),
    ):
        server = start(
            "uwsgi_es.wsgi:application",
            {"UWSGI_ES_DATABASE_URL": url, **env},
            logs / f"long-{label}",
            wait_for="ready",
        )
        try:
            if label == "with":  # the deposit that makes version LONG_STREAM takes the snapshot
                answer = server.post(f"/accounts/{account}/deposits", {"amount": 1}, timeout=120)
                assert answer.status == 200, answer.body
            latencies = []
            for _ in range(5):
                began = time.perf_counter()
                answer = server.get(f"/accounts/{account}", timeout=120)
                latencies.append(time.perf_counter() - began)
                assert answer.status == 200, answer.body
            figures[label] = statistics.median(latencies) * 1000
        finally:
            server.stop()
    return figures


@contextmanager
def databases() -> Iterator[list[tuple[str, Any]]]:
    """(store, make(name) -> (url, sqlite file or None)) for SQLite and a throwaway PostgreSQL
    with its durable defaults."""
    folder = Path(tempfile.mkdtemp(prefix="uwsgi_es-scale-"))

    def sqlite_database(name: str) -> tuple[str, Path | None]:
        file = folder / f"{name}.sqlite3"
        url = f"sqlite:///{file}"
        steps.migrate(Settings(database_url=url), BankAccounts)
        return url, file

    with PostgresServer(settings={"max_connections": "100"}) as postgres:

        def postgres_database(name: str) -> tuple[str, Path | None]:
            url = postgres.create_database(name)
            steps.migrate(Settings(database_url=url), BankAccounts)
            return url, None

        yield [("SQLite", sqlite_database), ("PostgreSQL", postgres_database)]


def main() -> None:
    logs = Path(tempfile.mkdtemp(prefix="uwsgi_es-bench-scale-"))
    points: list[Point] = []
    long: dict[str, dict[str, float]] = {}
    with databases() as stores:
        for store, make in stores:
            points += measure_store(store, *make("scale"), logs)
            long[store] = long_stream(make("long")[0], logs)
            print(f"{store}: a read of {LONG_STREAM} events {long[store]}", flush=True)
    (PROJECT / ".cache").mkdir(exist_ok=True)
    (PROJECT / ".cache" / "bench-scale.json").write_text(
        json.dumps({"points": [asdict(p) for p in points], "long": long}, indent=1)
    )
    from bench.report import write_scale

    write_scale(points, long)
    print(f"logs of every server: {logs}")


if __name__ == "__main__":
    main()
