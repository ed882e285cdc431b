"""`make bench`: uwsgi_es against its anchors, side by side, under the same uWSGI settings.

Every application runs as `uwsgi --master --processes 2 --http-socket ... --disable-logging`
(the same options for all), all at once, on the same machine as the load generator (wrk, 1 thread,
8 connections). Each scenario gets a warm-up, then rounds; in each round every contender runs once,
back to back, so a ratio compares runs made within seconds of each other. The report gives medians
of requests per second and the median of the per-round ratios: on a shared, noisy machine absolute
numbers drift, ratios hold.

The parts: ``contenders`` (the apps and their accounts), ``wrk`` (load), ``measure`` (comparisons,
boot, memory, profile), ``targets`` (what must be reached, as data), ``report`` (BENCHMARKS.md and
BENCHMARKS.png). This module only decides which comparisons run, against which servers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.apps import raw_cassandra, raw_sql
from bench.contenders import PROJECT, Contender, open_accounts, start
from bench.measure import (
    Row,
    boot_figures,
    compare,
    compare_pinned,
    health_profile,
    import_costs,
    memory_figures,
    where_time_goes,
)
from bench.projection import projection_row
from bench.report import write_report
from bench.sustained import sustained_row
from bench.wrk import deposit_script, read_script
from uwsgi_es.cli import steps
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.settings import Settings
from uwsgi_es.testing import PostgresServer
from uwsgi_es.testing.cassandra import CassandraNode


def sql_rows(
    store: str, env_ours: dict[str, str], env_raw: dict[str, str], env_lib: dict[str, str], logs: Path
) -> list[Row]:
    ours = Contender(
        "uwsgi_es", start("uwsgi_es.wsgi:application", env_ours, logs / f"ours-{store}", wait_for="ready")
    )
    raw = Contender(
        "raw SQL",
        start("bench.apps.raw_sql:application", env_raw, logs / f"raw-{store}"),
        opens_accounts=False,
    )
    library = Contender(
        "eventsourcing", start("bench.apps.es_library:application", env_lib, logs / f"lib-{store}")
    )
    rows = []
    try:
        for contender in (ours, raw, library):
            open_accounts(contender, "read10", 10, 10)
            open_accounts(contender, "read100", 10, 100)
        for contender in (ours, raw):  # long streams: against the raw select only
            open_accounts(contender, "read1000", 4, 1000)
        for anchor in (raw, library):
            # Fresh accounts for both sides of each write comparison: a deposit replays its account,
            # so ours must not carry the events of the previous comparison into this one.
            for contender in (ours, anchor):
                open_accounts(contender, "write", 100, 1)
            rows.append(compare("write: deposit", store, ours, anchor, deposit_script))
        for purpose, label in (("read10", "read: 10 events"), ("read100", "read: 100 events")):
            rows.append(compare(label, store, ours, raw, read_script(purpose)))
            rows.append(compare(label, store, ours, library, read_script(purpose)))
        rows.append(compare("read: 1,000 events", store, ours, raw, read_script("read1000")))
        if store == "PostgreSQL":
            rows.append(with_pre_ping(env_ours, ours, library, logs))
    finally:
        for contender in (ours, raw, library):
            contender.server.stop()
    return rows


def with_pre_ping(env_ours: dict[str, str], ours: Contender, library: Contender, logs: Path) -> Row:
    """What pinging every checkout would cost: the same server with UWSGI_ES_POOL_PRE_PING=true
    (off by default since a dropped connection is retried instead), reading the same accounts."""
    env = {**env_ours, "UWSGI_ES_POOL_PRE_PING": "true"}
    variant = Contender(
        "uwsgi_es, pre-ping on",
        start("uwsgi_es.wsgi:application", env, logs / "ours-ping", wait_for="ready"),
    )
    variant.accounts = ours.accounts
    try:
        return compare("read: 10 events", "PostgreSQL", variant, library, read_script("read10"))
    finally:
        variant.server.stop()


def cassandra_rows(env: dict[str, str], logs: Path) -> list[Row]:
    """Ours against a raw prepared-LWT app on the same node (the eventsourcing library has no
    Cassandra store to compare with)."""
    ours = Contender(
        "uwsgi_es", start("uwsgi_es.wsgi:application", env, logs / "ours-cassandra", wait_for="ready")
    )
    raw = Contender(
        "raw LWT",
        start("bench.apps.raw_cassandra:application", env, logs / "raw-cassandra"),
        opens_accounts=False,
    )
    rows = []
    try:
        for contender in (ours, raw):
            open_accounts(contender, "write", 100, 1)
            open_accounts(contender, "read10", 10, 10)
            open_accounts(contender, "read100", 10, 100)
        rows.append(compare("write: deposit", "Cassandra", ours, raw, deposit_script))
        rows.append(compare("read: 10 events", "Cassandra", ours, raw, read_script("read10")))
        rows.append(compare("read: 100 events", "Cassandra", ours, raw, read_script("read100")))
    finally:
        ours.server.stop()
        raw.server.stop()
    return rows


def ceiling_row(logs: Path, env: dict[str, str]) -> Row:
    ours = Contender(
        "uwsgi_es /health",
        start("uwsgi_es.wsgi:application", env, logs / "ceiling-ours", wait_for="ready", ceiling=True),
    )
    hello = Contender(
        "bare WSGI hello", start("bench.apps.hello:application", {}, logs / "ceiling-hello", ceiling=True)
    )
    try:
        return compare_pinned("ceiling: GET /health", ours, hello, ("/health", "/"))
    finally:
        ours.server.stop()
        hello.server.stop()


def migrate(settings: Settings) -> None:
    """What `uwsgi-es migrate` does for the example: the store's tables and its read models (a
    worker of the example is not ready without its projection's table)."""
    steps.migrate(settings, BankAccounts)


def main() -> None:
    logs = Path(tempfile.mkdtemp(prefix="uwsgi_es-bench-"))
    rows: list[Row] = []
    boot: dict[str, dict[str, float]] = {}

    sqlite_dir = Path(tempfile.mkdtemp(prefix="uwsgi_es-bench-sqlite-"))
    ours_sqlite = f"sqlite:///{sqlite_dir}/ours.sqlite3"
    raw_sqlite = f"sqlite:///{sqlite_dir}/raw.sqlite3"
    migrate(Settings(database_url=ours_sqlite))
    raw_sql.create_schema(raw_sqlite)
    sqlite_lib = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": f"{sqlite_dir}/library.sqlite3",
    }

    profile_url = f"sqlite:///{sqlite_dir}/profile.sqlite3"
    migrate(Settings(database_url=profile_url))
    profile = where_time_goes(profile_url)
    health = health_profile()
    rows.append(ceiling_row(logs, {"UWSGI_ES_DATABASE_URL": ours_sqlite}))
    rows += sql_rows(
        "SQLite",
        {"UWSGI_ES_DATABASE_URL": ours_sqlite},
        {"UWSGI_ES_DATABASE_URL": raw_sqlite},
        sqlite_lib,
        logs,
    )
    projection_sqlite = f"sqlite:///{sqlite_dir}/projection.sqlite3"
    migrate(Settings(database_url=projection_sqlite))
    projections = [projection_row(projection_sqlite, "SQLite")]

    def fresh_sqlite(name: str) -> str:
        url = f"sqlite:///{sqlite_dir}/{name}.sqlite3"
        migrate(Settings(database_url=url))
        return url

    projections.append(sustained_row(fresh_sqlite, "SQLite", logs))
    boot["SQLite"] = boot_figures({"UWSGI_ES_DATABASE_URL": ours_sqlite}, logs, "sqlite")
    memory = memory_figures({"UWSGI_ES_DATABASE_URL": ours_sqlite}, logs)
    imports = import_costs()

    with PostgresServer(settings={"max_connections": "300"}) as postgres:
        ours_pg, raw_pg = postgres.create_database("ours"), postgres.create_database("raw")
        postgres.create_database("library")
        migrate(Settings(database_url=ours_pg))
        raw_sql.create_schema(raw_pg)
        pg_lib = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": "library",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(postgres.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "unused",
        }
        rows += sql_rows(
            "PostgreSQL", {"UWSGI_ES_DATABASE_URL": ours_pg}, {"UWSGI_ES_DATABASE_URL": raw_pg}, pg_lib, logs
        )
        projection_pg = postgres.create_database("projection")
        migrate(Settings(database_url=projection_pg))
        projections.append(projection_row(projection_pg, "PostgreSQL"))

        def fresh_postgres(name: str) -> str:
            url = postgres.create_database(name)
            migrate(Settings(database_url=url))
            return url

        projections.append(sustained_row(fresh_postgres, "PostgreSQL", logs))
        boot["PostgreSQL"] = boot_figures({"UWSGI_ES_DATABASE_URL": ours_pg}, logs, "postgres")

    with CassandraNode(PROJECT / ".cache" / "cassandra") as node:
        settings = Settings(store="cassandra", cassandra_port=node.native_port, cassandra_keyspace="bench")
        migrate(settings)
        raw_cassandra.create_schema(node.native_port, "bench")
        env = {
            "UWSGI_ES_STORE": "cassandra",
            "UWSGI_ES_CASSANDRA_PORT": str(node.native_port),
            "UWSGI_ES_CASSANDRA_KEYSPACE": "bench",
        }
        rows += cassandra_rows(env, logs)
        boot["Cassandra"] = boot_figures(env, logs, "cassandra")

    write_report(rows, boot, memory, imports, profile, projections, health)
    print(f"logs of every server: {logs}")


if __name__ == "__main__":
    main()
