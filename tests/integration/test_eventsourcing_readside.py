"""The eventsourcing library's read side under real uWSGI: the library-written bank
(examples/eventsourcing_bank) served by deploy/uwsgi-eventsourcing.ini with its two projections in
mules, named by UWSGI_ES_PROJECTIONS: ``Balances`` (a library ``Projection`` and its view) and
``Audit`` (an ``EventSourcedProjection``, a process application recording one entry per money
movement). On the library's SQLite and PostgreSQL modules: one projection per mule, built after
the mule's fork; mules SIGKILLed under load resume and count every event once; and
``uwsgi-es project NAME`` runs the same runner outside uWSGI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from uwsgi_es.integrations.eventsourcing.projections import build, declared
from uwsgi_es.testing import UwsgiServer, lifecycle_events

from ..apps.es_followers import Emails
from ..support.library import environment, library_app, migrate, postgres_env, sqlite_env
from ..support.load import DepositLoad
from ..support.paths import PROJECT

pytestmark = pytest.mark.integration
StartServer = Any
ES_INI = PROJECT / "deploy" / "uwsgi-eventsourcing.ini"
EXAMPLE = "examples.eventsourcing_bank"
VIEWS = {
    "sqlite": f"{EXAMPLE}.projections:SqliteBalancesView",
    "postgres": f"{EXAMPLE}.postgres_views:PostgresBalancesView",
}
KILL_SECONDS = 12.0
STORE_LABELS = {"eventsourcing.sqlite": "sqlite", "eventsourcing.postgres": "postgresql+psycopg"}


@pytest.fixture(params=["sqlite", "postgres"])
def readside_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The bank's environment on one persistence module, with both projections declared and every
    table made by ``uwsgi-es migrate``."""
    if request.param == "sqlite":
        env = {**sqlite_env(tmp_path / "bank.db"), "AUDIT_SQLITE_DBNAME": str(tmp_path / "audit.db")}
    else:
        env = postgres_env(request.getfixturevalue("postgres"))
    env["UWSGI_ES_PROJECTIONS"] = (
        f"{EXAMPLE}.projections:Balances={VIEWS[request.param]},{EXAMPLE}.audit:Audit"
    )
    migrate(env)
    return env


def fold(env: dict[str, str]) -> tuple[dict[str, int], list[int], int]:
    """From the bank's notification log: each account's balance, the positions of the money
    movements, the last position."""
    with library_app(env) as app:
        notifications = app.recorder.select_notifications(start=None, limit=1_000_000)
        balances: dict[str, int] = {}
        movements = []
        for notification in notifications:
            event = app.mapper.to_domain_event(notification)
            key, kind = str(event.originator_id), type(event).__name__
            if kind == "Opened":
                balances[key] = 0
            else:
                balances[key] += event.amount if kind == "Deposited" else -event.amount
                movements.append(notification.id)
    return balances, movements, notifications[-1].id if notifications else 0


@contextmanager
def projections(env: dict[str, str]) -> Iterator[list[Any]]:
    """The two projections built in this process, as their mules build them."""
    with environment(env):
        built = [build(item) for item in declared(env["UWSGI_ES_PROJECTIONS"])]
    try:
        yield built
    finally:
        for item in built:
            item.close()


def read_side(env: dict[str, str], accounts: list[str]) -> tuple[dict[str, int], list[int], dict[str, int]]:
    """The balances view's balances, the positions the audit recorded entries for, and each
    projection's tracked position."""
    with projections(env) as (balances, audit):
        model = {}
        for account in accounts:
            row = balances.view.balance_of(UUID(account))
            if row is not None:
                model[account] = row["balance"]
        entries = audit.projection.recorder.select_notifications(start=None, limit=1_000_000)
        audited = [audit.projection.mapper.to_domain_event(n).position for n in entries]
        tracked = {
            "balances": balances.view.max_tracking_id("BankAccounts") or 0,
            "audit": audit.view.max_tracking_id("BankAccounts") or 0,
        }
    return model, audited, tracked


def caught_up(env: dict[str, str], timeout: float = 30.0) -> tuple[dict[str, int], list[int], int]:
    """The fold, once both projections have tracked its last position (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        balances, movements, last = fold(env)
        _, _, tracked = read_side(env, list(balances))
        if tracked == {"balances": last, "audit": last}:
            return balances, movements, last
        assert time.monotonic() < deadline, f"not caught up with {last}: {tracked}"
        time.sleep(0.1)


def assert_read_side_is_the_fold(env: dict[str, str]) -> int:
    """Both read models equal the fold of the bank's events: every money movement counted exactly
    once. Returns the number of events."""
    balances, movements, last = caught_up(env)
    model, audited, _ = read_side(env, list(balances))
    assert model == balances
    assert sorted(audited) == movements, "an audit entry is missing or was recorded twice"
    return last


def projections_at(server: UwsgiServer, position: int, timeout: float = 10.0) -> dict[str, Any]:
    """/worker's projections once each has reached ``position`` (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        projections: dict[str, Any] = server.get("/worker").json()["projections"]
        if all(p["position"] >= position for p in projections.values()):
            return projections
        assert time.monotonic() < deadline, projections
        time.sleep(0.05)


def runners(server: UwsgiServer) -> list[dict[str, Any]]:
    return list(lifecycle_events(server.log(), "projection_runner"))


@pytest.mark.interpreters
def test_each_library_projection_runs_in_its_own_mule_built_after_the_fork(
    uwsgi_server: StartServer, readside_env: dict[str, str]
) -> None:
    """Mule 1 runs balances, mule 2 the audit; each built the bank (and its projection) once, in
    itself, never in the master or a worker; the read models equal the fold of the events; uWSGI
    stops cleanly."""
    server = uwsgi_server(ES_INI, env=readside_env, options=["--processes", "2"])
    account = server.post("/accounts", {"owner": "library read side"}).json()["id"]
    for amount in (5, 7, 11):
        assert server.post(f"/accounts/{account}/deposits", {"amount": amount}).status == 200
    assert server.post(f"/accounts/{account}/withdrawals", {"amount": 3}).status == 200
    assert assert_read_side_is_the_fold(readside_env) == 5
    started = {e["role"]: e for e in runners(server)}
    assert {role: e["projection"] for role, e in started.items()} == {"mule 1": "balances", "mule 2": "audit"}
    assert len(runners(server)) == 2, "a runner started twice"
    builds = [e for e in lifecycle_events(server.log(), "build") if e.get("mule")]
    assert sorted(int(e["mule"]) for e in builds) == [1, 2]
    mule_pids = {int(e["pid"]) for e in started.values()}
    assert {int(e["pid"]) for e in builds} == mule_pids
    assert not mule_pids & {server.pid, *server.worker_pids()}
    server.stop()
    assert "Traceback" not in server.log()
    assert "Segmentation Fault" not in server.log()


def test_every_read_sees_its_own_write_and_the_workers_report_the_projections(
    uwsgi_server: StartServer, readside_env: dict[str, str]
) -> None:
    """A write answers the notification id of its last event (X-Event-Position); a read of the
    balances view sending it back (X-Min-Position) shows the write, from any worker; a position not
    reached within UWSGI_ES_READ_WAIT is a 503 naming the lag; /ready, /worker and /metrics give
    each projection's position and lag; the audit's view moves past the events it does not follow."""
    env = {**readside_env, "UWSGI_ES_READ_WAIT": "0.5"}
    server = uwsgi_server(ES_INI, env=env, options=["--processes", "4"])
    opened = server.post("/accounts", {"owner": "reads its writes"})
    account = opened.json()["id"]
    assert opened.headers["x-event-position"] == "1"
    for amount in range(1, 21):
        written = server.post(f"/accounts/{account}/deposits", {"amount": amount})
        read = server.get(
            f"/balances/{account}", headers={"X-Min-Position": written.headers["x-event-position"]}
        )
        assert read.status == 200, read.body
        assert read.json()["balance"] == amount * (amount + 1) // 2
        assert read.json()["position"] == int(written.headers["x-event-position"])
    lagging = server.get(f"/balances/{account}", headers={"X-Min-Position": "1000"})
    assert lagging.status == 503
    assert "'balances' is at position 21, before the position 1000 asked for" in lagging.json()["error"]
    assert server.get(f"/balances/{uuid4()}").status == 404
    assert server.get(f"/balances/{account}", headers={"X-Min-Position": "x"}).status == 400
    other = server.post("/accounts", {"owner": "no money moves"})  # an event the audit does not follow
    position = int(other.headers["x-event-position"])
    projections = projections_at(server, position)
    assert projections == {
        "balances": {"position": position, "lag": 0},
        "audit": {"position": position, "lag": 0},
    }
    assert set(server.get("/ready").json()["projections"]) == {"balances", "audit"}  # (rechecked each second)
    metrics = server.get("/metrics").body.decode()
    assert f'uwsgi_es_projection_position{{projection="audit"}} {position}' in metrics
    server.stop()
    assert "Traceback" not in server.log()


@pytest.mark.reliability
def test_killed_library_projection_mules_resume_and_count_every_event_once(
    uwsgi_server: StartServer, readside_env: dict[str, str], report: Any
) -> None:
    """Under write load, a runner mule is SIGKILLed every 2 s; uWSGI respawns it and it resumes
    from its view's tracking record. Afterwards the balances equal the fold and the audit holds
    one entry per money movement."""
    server = uwsgi_server(ES_INI, env=readside_env, options=["--processes", "2"])
    load = DepositLoad(server, one_writer_per_account=True, threads=4).start()
    kills = 0
    deadline = time.monotonic() + KILL_SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(2)
            pids = {e["role"]: int(e["pid"]) for e in runners(server)}
            os.kill(pids[("mule 1", "mule 2")[kills % 2]], signal.SIGKILL)
            kills += 1
    finally:
        load.stop()
    load.audit().check()
    events = assert_read_side_is_the_fold(readside_env)
    assert len(runners(server)) >= kills + 2, "a killed mule did not come back"
    report(
        "library projection mules killed under load",
        {"UWSGI_ES_DATABASE_URL": STORE_LABELS[readside_env["PERSISTENCE_MODULE"]]},
        f"{kills} mules SIGKILLed over {KILL_SECONDS:.0f}s; {events} events; balances equal to the fold, "
        "one audit entry per money movement",
    )


def test_uwsgi_es_project_runs_a_library_projection_outside_uwsgi(tmp_path: Path) -> None:
    """`uwsgi-es project audit` follows the bank's notification log, stops on SIGTERM."""
    env = {**sqlite_env(tmp_path / "bank.db"), "AUDIT_SQLITE_DBNAME": str(tmp_path / "audit.db")}
    env["UWSGI_ES_PROJECTIONS"] = f"{EXAMPLE}.audit:Audit"
    env["UWSGI_ES_APPLICATION"] = f"{EXAMPLE}.application:BankAccounts"
    migrate(env)
    log = tmp_path / "project.log"
    command = [str(Path(sys.executable).parent / "uwsgi-es"), "project", "audit"]
    full = {**os.environ, **env, "PYTHONPATH": str(PROJECT)}
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=PROJECT, env=full, stdout=out, stderr=subprocess.STDOUT)
    try:
        with library_app(env) as app:
            account = app.open_account("outside")
            app.deposit(account.id, 12)
        deadline = time.monotonic() + 15
        while True:
            with projections(env) as (audit,):
                if audit.view.max_tracking_id("BankAccounts") == 2:
                    entries = audit.projection.recorder.select_notifications(start=None, limit=10)
                    assert [audit.projection.mapper.to_domain_event(n).amount for n in entries] == [12]
                    break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "uwsgi-es project: audit stopped" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_a_system_runs_its_followers_in_mules_after_the_workers_leader(
    uwsgi_server: StartServer, tmp_path: Path
) -> None:
    """UWSGI_ES_PROJECTIONS names a System (bank -> notices -> emails): the bank serves in the
    workers, mule 1 runs notices (following the bank), mule 2 emails (following notices, whose log
    it reads through an application of its own); one email per withdrawal reaches the end."""
    env = {
        **sqlite_env(tmp_path / "bank.db"),
        "NOTICES_SQLITE_DBNAME": str(tmp_path / "notices.db"),
        "EMAILS_SQLITE_DBNAME": str(tmp_path / "emails.db"),
        "UWSGI_ES_PROJECTIONS": "tests.apps.es_followers:system",
    }
    migrate(env)
    server = uwsgi_server(ES_INI, env=env, options=["--processes", "2"])
    account = server.post("/accounts", {"owner": "system"}).json()["id"]
    assert server.post(f"/accounts/{account}/deposits", {"amount": 50}).status == 200
    for amount in (4, 5, 6):
        assert server.post(f"/accounts/{account}/withdrawals", {"amount": amount}).status == 200
    deadline = time.monotonic() + 20
    while True:
        with environment(env):
            emails = Emails()
        try:
            queued = [
                emails.mapper.to_domain_event(n).amount
                for n in emails.recorder.select_notifications(None, 10)
            ]
        finally:
            emails.close()
        if len(queued) >= 3:
            break
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    assert queued == [4, 5, 6]
    assert {e["role"]: e["projection"] for e in runners(server)} == {"mule 1": "notices", "mule 2": "emails"}
    server.stop()
    assert "Traceback" not in server.log()
