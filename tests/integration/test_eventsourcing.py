"""Applications written with the eventsourcing library, deployed by uwsgi_es under real uWSGI, on
each persistence module its users pick: eventsourcing.sqlite (one file, 4 workers),
eventsourcing.postgres and eventsourcing_sqlalchemy (the suite's PostgreSQL), and uwsgi_es's own
Cassandra module (the suite's Cassandra node)."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import time
import zlib
from contextlib import closing
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import create_engine, text

from uwsgi_es.testing import PostgresServer, UwsgiServer, UwsgiStartError, lifecycle_events
from uwsgi_es.testing.cassandra import CassandraNode
from uwsgi_es.testing.postgres import ExistingPostgres

from ..support.checks import built_once_each, fan_out, move_money_concurrently, worker_reports
from ..support.library import library_app, migrate, postgres_env, sqlite_env, uwsgi_es
from ..support.load import aged_trigger, reload_under_load
from ..support.paths import PROJECT

pytestmark = pytest.mark.integration
StartServer = Any
ES_INI = PROJECT / "deploy" / "uwsgi-eventsourcing.ini"
THREADS = ["--processes", "4", "--threads", "4", "--async", "0", "--loop", "simple"]
_numbers = itertools.count()


@pytest.fixture(params=["sqlite", "postgres", "sqlalchemy", "cassandra"])
def library_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The library's own environment for one persistence module (servers start on first use)."""
    if request.param == "sqlite":
        return sqlite_env(tmp_path / "bank.db")
    if request.param == "cassandra":
        node: CassandraNode = request.getfixturevalue("cassandra")
        return {
            "PERSISTENCE_MODULE": "uwsgi_es.integrations.eventsourcing.cassandra",
            "CASSANDRA_PORT": str(node.native_port),
            "CASSANDRA_KEYSPACE": f"bank_{os.getpid()}_{next(_numbers)}",
        }
    server = request.getfixturevalue("postgres")
    if request.param == "postgres":
        return postgres_env(server)
    url = server.create_database(f"esa_{os.getpid()}_{next(_numbers)}")
    return {"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy", "SQLALCHEMY_URL": url}


def assert_built_per_worker(server: UwsgiServer, reports: list[dict[str, Any]], module: str) -> set[int]:
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert report["constructions"] == 1, report
        assert report["application"] == "BankAccounts", report
        assert report["persistence"] == module, report
        assert report["worker_id"] >= 1, report
    pids = {r["pid"] for r in reports}
    assert server.pid not in pids
    return pids


@pytest.mark.interpreters
def test_a_library_application_is_built_once_per_worker_after_the_fork(
    uwsgi_server: StartServer, library_env: dict[str, str]
) -> None:
    """deploy/uwsgi-eventsourcing.ini, 4 workers: each built its own BankAccounts (the library's
    Application) after the fork; the commands, the refusal (409), the notification log and the
    snapshots (every 10 events) work; each worker closes its application when uWSGI stops."""
    serve_the_bank(uwsgi_server, library_env, ["--processes", "4"])


@pytest.mark.interpreters
def test_lazy_apps_build_a_library_application_at_import(uwsgi_server: StartServer, tmp_path: Path) -> None:
    """The same with lazy-apps (each worker imports the module, after its fork), on SQLite."""
    env = sqlite_env(tmp_path / "lazy.db")
    serve_the_bank(uwsgi_server, env, ["--processes", "4", "--lazy-apps"])


def serve_the_bank(uwsgi_server: StartServer, library_env: dict[str, str], options: list[str]) -> None:
    migrate(library_env)
    server = uwsgi_server(ES_INI, env=library_env, options=options)
    reports = [r.json() for r in fan_out(200, lambda _: server.get("/worker"))]
    pids = assert_built_per_worker(server, reports, library_env["PERSISTENCE_MODULE"])
    assert len(pids) >= 2
    account = server.post("/accounts", {"owner": "library"}).json()["id"]
    for _ in range(12):
        assert server.post(f"/accounts/{account}/deposits", {"amount": 5}).status == 200
    refused = server.post(f"/accounts/{account}/withdrawals", {"amount": 1000})
    assert refused.status == 409
    assert "insufficient funds" in refused.json()["error"]
    assert server.get(f"/accounts/{account}").json()["balance"] == 60
    no_view = server.get(f"/balances/{account}")  # no projection declared (UWSGI_ES_PROJECTIONS)
    assert no_view.status == 404
    assert "'balances' is not kept on this deployment" in no_view.json()["error"]
    log = server.get("/events?limit=1000").json()["events"]
    assert [e["version"] for e in log if e["originator_id"] == account] == list(range(1, 14))
    with library_app(library_env) as app:
        snapshots = list(app.snapshots.get(UUID(account)))
    assert [s.originator_version for s in snapshots] == [10]
    built = {int(e["pid"]) for e in lifecycle_events(server.log(), "build")}
    assert {e["application"] for e in lifecycle_events(server.log(), "build")} == {"BankAccounts"}
    server.wait_until_idle()
    workers = set(server.worker_pids())
    assert workers <= built
    server.stop()
    closed = {int(e["pid"]) for e in lifecycle_events(server.log(), "close")}
    assert workers <= closed


def test_library_application_kinds_name_their_store_without_secrets(
    uwsgi_server: StartServer, postgres: PostgresServer | ExistingPostgres
) -> None:
    """/worker and the build event describe the library application and its PostgreSQL (never
    the password); an unknown persistence module stops nothing but answers 503 naming it in the log."""
    env = postgres_env(postgres)
    env["POSTGRES_PASSWORD"] = "secret-library-password"  # noqa: S105 (trust auth ignores it)
    migrate(env)
    server = uwsgi_server(ES_INI, env=env, options=["--processes", "2"])
    report = server.get("/worker").json()
    assert report["store"].startswith(
        "BankAccounts (eventsourcing.postgres at postgresql://postgres@127.0.0.1:"
    )
    assert "secret-library-password" not in server.log() + str(report)
    broken = uwsgi_server(
        ES_INI,
        env={**env, "PERSISTENCE_MODULE": "no.such.module"},
        options=["--processes", "1"],
        wait_for="health",
    )
    assert broken.get("/ready").status == 503
    assert "Failed to resolve persistence module topic: 'no.such.module'" in broken.log()


def test_tables_are_created_by_migrate_never_by_the_workers(
    uwsgi_server: StartServer, postgres: PostgresServer | ExistingPostgres
) -> None:
    """Four workers starting at once on an empty PostgreSQL create nothing (the library would race
    itself: "tuple concurrently updated"); they answer 503 naming `uwsgi-es migrate`, and serve
    as soon as it ran, without a restart."""
    env = postgres_env(postgres)
    server = uwsgi_server(ES_INI, env=env, options=["--processes", "4"], wait_for="health")
    answers = [server.get("/ready") for _ in range(8)]
    assert {a.status for a in answers} == {503}
    assert "uwsgi-es migrate" in server.log()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/{env['POSTGRES_DBNAME']}"
    engine = create_engine(url)
    with engine.connect() as connection:
        tables = connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
    assert tables == [], "a worker created tables"
    migrate(env)
    server.wait_until_ready()
    with engine.connect() as connection:
        tables = connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
    engine.dispose()
    assert {"bankaccounts_events", "bankaccounts_snapshots"} <= {t for (t,) in tables}
    assert "concurrently updated" not in server.log()


@pytest.mark.interpreters
def test_a_library_application_built_in_the_master_is_never_used_by_a_worker(
    uwsgi_server: StartServer, postgres: PostgresServer | ExistingPostgres
) -> None:
    """The library's examples build the application at import time: in the uWSGI master, with its
    psycopg pool open before the fork. Each worker, and each that replaces one (max-requests),
    forgets it without closing it and builds its own, with backends of its own; the master's
    backend outlives them all."""
    env = {**postgres_env(postgres), "PROBE_BUILD_IN_MASTER": "1"}
    migrate(env)
    options = ["--module", "tests.apps.es_probe:application", "--processes", "3"]
    # 150: well above what the harness's start-up probes cost a worker (with a lower bound, a
    # worker could be recycled again and again before every slot had answered ready), while 600
    # requests over 3 workers make at least one serve more than 150, so respawns happen.
    options += ["--max-requests", "150", "--min-worker-lifetime", "0"]
    server = uwsgi_server(ES_INI, env=env, options=options)
    master_backend = int(re.findall(r"probe: master \d+ holds backend (\d+)", server.log())[0])
    answers = [r.json() for r in fan_out(600, lambda _: server.get("/probe/backend"), concurrency=8)]
    backend_of: dict[int, set[int]] = {}
    for answer in answers:
        backend_of.setdefault(answer["pid"], set()).add(answer["backend_pid"])
    assert master_backend not in set().union(*backend_of.values())
    for pid, backends in backend_of.items():
        others = set().union(*(b for p, b in backend_of.items() if p != pid))
        assert not backends & others, "two workers shared a backend"
    assert len(backend_of) > 3, "expected respawned workers too"
    forgot = list(lifecycle_events(server.log(), "forgot_inherited"))
    assert forgot
    assert {int(e["built_in_pid"]) for e in forgot} == {server.pid}
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/{env['POSTGRES_DBNAME']}"
    engine = create_engine(url)
    with engine.connect() as connection:
        state = connection.execute(
            text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": master_backend}
        ).scalar_one_or_none()
    engine.dispose()
    assert state == "idle", "the master's connection was closed or broken by a worker"


@pytest.mark.reliability
def test_concurrent_commands_on_shared_accounts_lose_and_repeat_nothing(
    uwsgi_server: StartServer, library_env: dict[str, str], report: Any
) -> None:
    """4 workers x 4 threads deposit and withdraw on 3 accounts at once: the library refuses the
    conflicting saves, uwsgi_es's retry policy re-runs them; every acknowledged operation is stored
    exactly once, versions are 1..n, balances add up (see ``move_money_concurrently``)."""
    migrate(library_env)
    server = uwsgi_server(ES_INI, env=library_env, options=THREADS)
    operations = 200 if "cassandra" in library_env["PERSISTENCE_MODULE"] else 400
    started = time.monotonic()
    figures = move_money_concurrently(server, operations=operations, concurrency=16)
    took = time.monotonic() - started
    reports = {r["pid"]: r for r in worker_reports(server, 40)}
    assert all(r["constructions"] == 1 for r in reports.values())
    module = library_env["PERSISTENCE_MODULE"]
    report(
        "eventsourcing library app, 4x4 concurrent commands",
        {"UWSGI_ES_STORE": module},
        f"{figures}; {took:.1f}s",
    )


@pytest.mark.reliability
def test_chain_reload_replaces_library_applications_without_failing_a_request(
    uwsgi_server: StartServer, postgres: PostgresServer | ExistingPostgres, report: Any, tmp_path: Path
) -> None:
    """lazy-apps + touch-chain-reload on eventsourcing.postgres, under write load: each new worker
    builds its own application (its own pool) before the old one is stopped and closes its own;
    zero failed requests, nothing acknowledged lost or stored twice."""
    env = postgres_env(postgres)
    migrate(env)
    trigger = aged_trigger(tmp_path)
    options = ["--processes", "3", "--lazy-apps", "--touch-chain-reload", str(trigger)]
    server = uwsgi_server(ES_INI, env=env, options=options)
    load, before, after = reload_under_load(server, trigger)
    audit = load.audit()
    audit.check()
    assert audit.failed == 0, audit.line()
    assert after <= set(built_once_each(server))
    closed = {int(e["pid"]) for e in lifecycle_events(server.log(), "close")}
    assert before <= closed, "a replaced worker did not close its application"
    report(
        "chain reload, eventsourcing library app (lazy-apps)",
        {"UWSGI_ES_STORE": env["PERSISTENCE_MODULE"]},
        f"{len(before)} workers replaced one by one; {audit.line()}",
    )


@pytest.mark.parametrize(
    ("env", "code", "said"),
    [
        ({}, 78, "set PERSISTENCE_MODULE"),
        (
            {"PERSISTENCE_MODULE": "eventsourcing.postgres", "UWSGI_ES_FAIL_FAST": "true"},
            22,
            "POSTGRES_DBNAME",
        ),
    ],
    ids=["no-persistence-module", "fail-fast-missing-setting"],
)
def test_a_library_application_that_cannot_be_built_stops_uwsgi_at_start(
    tmp_path: Path, env: dict[str, str], code: int, said: str
) -> None:
    """deploy/uwsgi-eventsourcing.ini refuses to serve the library's in-memory default; with
    fail-fast the master asks the library to build its factory from the environment (connecting
    to nothing) and a missing setting stops uWSGI, named, before a worker is forked."""
    server = UwsgiServer(ES_INI, env=env, log_dir=tmp_path, startup_timeout=20)
    with pytest.raises(UwsgiStartError, match=f"exited with code {code}"):
        server.start()
    assert said in server.log()
    assert list(lifecycle_events(server.log(), "build")) == []


def test_the_librarys_cipher_and_compressor_apply_in_every_worker(
    uwsgi_server: StartServer, tmp_path: Path
) -> None:
    """The library's CIPHER_TOPIC/CIPHER_KEY and COMPRESSOR_TOPIC, set for uWSGI: every worker
    builds its application with them, so the stored events and snapshots are compressed, then
    encrypted (no owner's name, no field name in the file), and the answers are right."""
    from eventsourcing.cipher import AESCipher
    from eventsourcing.utils import Environment

    key = AESCipher.create_key(16)
    env = {
        **sqlite_env(tmp_path / "bank.db"),
        "CIPHER_TOPIC": "eventsourcing.cipher:AESCipher",
        "CIPHER_KEY": key,
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
    }
    migrate(env)
    server = uwsgi_server(ES_INI, env=env, options=["--processes", "2"])
    owner = "Plaintext Ownername"
    account = server.post("/accounts", {"owner": owner}).json()["id"]
    for _ in range(12):
        assert server.post(f"/accounts/{account}/deposits", {"amount": 5}).status == 200
    assert server.get(f"/accounts/{account}").json() == {
        "id": account,
        "owner": owner,
        "balance": 60,
        "version": 13,
    }
    server.stop()
    with closing(sqlite3.connect(tmp_path / "bank.db")) as connection:
        states = [bytes(row[0]) for row in connection.execute("SELECT state FROM stored_events")]
        snapshots = [bytes(row[0]) for row in connection.execute("SELECT state FROM stored_snapshots")]
    assert len(states) == 13
    assert len(snapshots) == 1
    for state in states + snapshots:
        assert owner.encode() not in state
        assert b"amount" not in state
    cipher = AESCipher(Environment(env={"CIPHER_KEY": key}))
    first = zlib.decompress(cipher.decrypt(states[0]))
    assert owner.encode() in first  # what the library wrote, readable with the key only


def test_a_follower_in_another_service_follows_the_notification_log_over_http(
    uwsgi_server: StartServer, tmp_path: Path
) -> None:
    """GET /notifications/<first>,<last> serves the library's JSON sections (full ones immutable,
    cacheable; the last one no-cache) and GET /notifications a selection; the library's own
    NotificationLogJSONClient reads them, and a process application elsewhere follows the bank
    through them: one notice per withdrawal, none twice."""
    from eventsourcing.interface import NotificationLogJSONClient

    from uwsgi_es.integrations.eventsourcing.notification_log import HttpNotificationLog

    from ..apps.es_followers import Notices

    env = sqlite_env(tmp_path / "bank.db")
    migrate(env)
    server = uwsgi_server(ES_INI, env=env, options=["--processes", "2"])
    account = server.post("/accounts", {"owner": "followed over http"}).json()["id"]
    for _ in range(10):
        assert server.post(f"/accounts/{account}/deposits", {"amount": 5}).status == 200
    for amount in (7, 8):
        assert server.post(f"/accounts/{account}/withdrawals", {"amount": amount}).status == 200
    full, last = server.get("/notifications/1,10"), server.get("/notifications/11,20")
    assert (full.status, full.headers["cache-control"]) == (200, "public, max-age=31536000, immutable")
    assert (last.status, last.headers["cache-control"]) == (200, "no-cache")
    assert [item["id"] for item in full.json()["items"]] == list(range(1, 11))
    assert (full.json()["next_id"], last.json()["id"], last.json()["next_id"]) == ("11,20", "11,13", None)
    too_many = server.get("/notifications?limit=11")
    assert (too_many.status, too_many.json()["error"]) == (
        400,
        "query parameter limit must be from 1 to 10, got 11",
    )
    for bad in (
        "/notifications/0,10",
        "/notifications/10,1",
        "/notifications/x",
        "/notifications?topics=a%20b",
    ):
        answer = server.get(bad)
        assert answer.status == 400, (bad, answer.body)
    log = NotificationLogJSONClient(HttpNotificationLog(f"{server.url}/notifications"))
    assert [n.id for n in log["1,10"].items] == list(range(1, 11))
    withdrawn = "examples.eventsourcing_bank.domain:BankAccount.Withdrawn"
    assert [n.id for n in log.select(start=None, limit=10, topics=[withdrawn])] == [12, 13]
    notices = Notices(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "n.db")}
    )
    try:
        notices.follow("BankAccounts", log)
        for _ in range(2):  # the second pull finds nothing new
            notices.pull_and_process("BankAccounts")
            sent = notices.recorder.select_notifications(start=None, limit=100)
            assert [notices.mapper.to_domain_event(n).amount for n in sent] == [7, 8]
        assert notices.recorder.max_tracking_id("BankAccounts") == 13
    finally:
        notices.close()


def test_a_dcb_application_is_built_once_per_worker_and_its_condition_holds_across_workers(
    uwsgi_server: StartServer, postgres: PostgresServer | ExistingPostgres
) -> None:
    """eventsourcing.dcb's DCBApplication (not an Application subclass), on its PostgreSQL module:
    its table made by uwsgi-es migrate, one application per worker built after the fork; 40
    students booking a 10-seat course at once through 4 workers get exactly 10 seats."""
    env = {**postgres_env(postgres), "PERSISTENCE_MODULE": "eventsourcing.dcb.postgres_tt"}
    migrated = uwsgi_es("migrate", {**env, "UWSGI_ES_APPLICATION": "tests.apps.dcb_courses:Courses"})
    assert migrated.returncode == 0, migrated.stderr
    assert (
        "schema ready for Courses (eventsourcing.dcb.postgres_tt at postgresql://postgres@" in migrated.stdout
    )
    options = ["--module", "tests.apps.dcb_courses:application", "--processes", "4"]
    server = uwsgi_server(ES_INI, env=env, options=options)
    reports = [r.json() for r in fan_out(100, lambda _: server.get("/worker"))]
    for report in reports:
        assert (report["pid"], report["constructions"], report["application"]) == (
            report["built_in_pid"],
            1,
            "Courses",
        ), report
    assert len({r["pid"] for r in reports}) >= 2
    answers = fan_out(
        40,
        lambda i: server.post("/courses/python-101/bookings", {"student": f"s{i}", "capacity": 10}),
        concurrency=8,
    )
    assert sorted(a.status for a in answers) == [201] * 10 + [409] * 30
    assert all("full (10 seats)" in a.json()["error"] for a in answers if a.status == 409)
    booked = server.get("/courses/python-101").json()["booked"]
    assert len(booked) == len(set(booked)) == 10
    assert server.post("/courses/python-101/bookings", {"student": "s", "capacity": "10"}).status == 400
    server.stop()
    assert "Traceback" not in server.log()


def test_the_librarys_aggregate_cache_stays_right_across_workers(
    uwsgi_server: StartServer, tmp_path: Path
) -> None:
    """AGGREGATE_CACHE_MAXSIZE on (the library fast-forwards cached aggregates by default), 4
    workers x 4 threads moving money on 3 shared accounts: every acknowledged operation stored
    once, versions 1..n, balances add up, though each worker keeps its own cache."""
    env = {**sqlite_env(tmp_path / "cached.db"), "AGGREGATE_CACHE_MAXSIZE": "100"}
    migrate(env)
    server = uwsgi_server(ES_INI, env=env, options=THREADS)
    move_money_concurrently(server, operations=200, concurrency=16)
    assert all(r["constructions"] == 1 for r in worker_reports(server, 20))
