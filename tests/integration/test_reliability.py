"""Reliability on real uWSGI and real databases: killed workers, reloads, outages, clean stops.

Each test prints its figures (requests sent, acknowledged, failed, lost, duplicated); with
RELIABILITY_REPORT=path they are also collected into that file (`make reliability` turns them
into docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.cli import migrate as migrate_tables
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store
from uwsgi_es.testing import PostgresServer, UwsgiServer, UwsgiStartError, free_port, lifecycle_events
from uwsgi_es.testing.cassandra import CassandraNode

from ..conftest import EXAMPLE
from ..support.checks import assert_one_application_per_worker, built_once_each, worker_reports
from ..support.load import DepositLoad, aged_trigger, reload_under_load
from ..support.paths import INI, PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
StartServer = Any
KILL_SECONDS = float(os.environ.get("RELIABILITY_KILL_SECONDS", "20"))


def migrate(url: str) -> None:
    """What a deployment runs first (`uwsgi-es migrate --ini uwsgi.ini`): the store's tables and
    the example's read model, without which /ready names the missing table."""
    migrate_tables(Settings(database_url=url, application=EXAMPLE))


def kill_a_worker_every_2s(server: UwsgiServer, rng: random.Random) -> list[float]:
    """SIGKILL a random worker every 2 s for KILL_SECONDS; when each kill happened."""
    kill_times: list[float] = []
    deadline = time.monotonic() + KILL_SECONDS
    while time.monotonic() < deadline:
        time.sleep(2)
        victims = server.worker_pids()
        if victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
            kill_times.append(time.monotonic())
    return kill_times


def test_killed_workers_lose_nothing_acknowledged(
    uwsgi_server: StartServer, fault_env: dict[str, str], report: Any
) -> None:
    """SIGKILL a random worker every 2 s for 20 s under write load. Only requests in flight at a
    kill may fail (in async mode a worker holds several, so a kill may fail more than one);
    every acknowledged write is stored once; replacements build once."""
    server = uwsgi_server(INI, env=fault_env, options=["--processes", "4"])
    # One writer per account: a 409 (conflict retries exhausted, legitimate under contention) cannot
    # hide among the failures a kill may cause, and any 409 here would be the server's own doing.
    load = DepositLoad(server, one_writer_per_account=True).start()
    kill_times = kill_a_worker_every_2s(server, random.Random(11))
    kills = len(kill_times)
    time.sleep(1)
    load.stop()
    server.wait_until_ready()
    audit = load.audit()
    audit.check()
    failures = [o for o in load.outcomes if o.status != 200]
    assert all(o.status == 0 for o in failures), audit.line()  # no 4xx/5xx: only lost connections
    for failure in failures:  # each was in flight when a worker was killed
        started = failure.finished - failure.elapsed
        assert any(started - 0.05 <= killed <= failure.finished + 0.05 for killed in kill_times), (
            f"a request failed while no worker was being killed: {failure}"
        )
    assert audit.failed <= kills * load.threads, f"{audit.failed} failures for {kills} kills: {audit.line()}"
    builds = built_once_each(server)
    assert set(server.worker_pids()) <= set(builds)
    assert len(builds) > 4, "no replacement worker was built"
    assert_one_application_per_worker(server, worker_reports(server, 40))
    report("killed workers", fault_env, f"{kills} workers SIGKILLed over {KILL_SECONDS:.0f}s; {audit.line()}")


def test_chain_reload_replaces_every_worker_without_failing_a_request(
    uwsgi_server: StartServer, backend_env: dict[str, str], report: Any, tmp_path: Path
) -> None:
    """lazy-apps + touch-chain-reload: workers are replaced one by one under load, zero failures."""
    trigger = aged_trigger(tmp_path)
    options = ["--processes", "4", "--lazy-apps", "--touch-chain-reload", str(trigger)]
    server = uwsgi_server(INI, env=backend_env, options=options)
    load, before, after = reload_under_load(server, trigger)
    audit = load.audit()
    audit.check()
    assert audit.failed == 0, audit.line()
    assert after <= set(built_once_each(server))
    report(
        "chain reload (lazy-apps)", backend_env, f"{len(before)} workers replaced one by one; {audit.line()}"
    )


def test_full_reload_loses_no_acknowledged_write(
    uwsgi_server: StartServer, fault_env: dict[str, str], report: Any, tmp_path: Path
) -> None:
    """touch-reload (a full, graceful reload): requests may fail meanwhile, acknowledged ones never."""
    trigger = aged_trigger(tmp_path)
    server = uwsgi_server(INI, env=fault_env, options=["--processes", "4", "--touch-reload", str(trigger)])
    load, before, after = reload_under_load(server, trigger)
    audit = load.audit()
    audit.check()
    assert after <= set(built_once_each(server))
    report("full reload (touch-reload)", fault_env, f"{len(before)} workers replaced at once; {audit.line()}")


def outage_under_load(
    server: UwsgiServer, stop: Callable[[], None], start: Callable[[], None], seconds: float = 5.0
) -> tuple[DepositLoad, float, float, list[int]]:
    """Stop the database for ``seconds`` under write load, then start it again. Returns the load,
    when the outage began and ended, and /ready's statuses during the outage. One writer per
    account: a conflict exhausting its retries (a correct 409 under contention) cannot blur what
    the outage did."""
    load = DepositLoad(server, timeout=30, one_writer_per_account=True).start()
    time.sleep(2)
    began = time.monotonic()
    stop()
    ready_statuses = []
    while time.monotonic() - began < seconds:
        ready_statuses.append(server.get("/ready").status)
        time.sleep(0.5)
    start()
    ended = time.monotonic()
    time.sleep(8)
    load.stop()
    return load, began, ended, ready_statuses


def check_outage(load: DepositLoad, began: float, ended: float, ready_statuses: list[int], store: str) -> str:
    """503 during the outage (never a 500 or a hang), saying only that the event store is
    unavailable, and none of them stored (``audit.check``); serving again within 5 s. A deposit
    in flight as the server went away, whose connection broke after it was sent and before its
    answer, may have committed: that one answers 504 "may have been stored" (at most one per
    client), never 503."""
    audit = load.audit()
    audit.check()
    assert set(audit.statuses) <= {200, 503, 504}, audit.line()
    unknown = [o for o in load.outcomes if o.status == 504]
    assert all("it may have been stored" in o.error for o in unknown), unknown[:1]
    assert len(unknown) <= load.threads, audit.line()
    refusals = [o for o in load.outcomes if o.status == 503]
    assert refusals, "the outage was never noticed"
    assert all(json.loads(o.error) == {"error": "the event store is unavailable"} for o in refusals), (
        refusals[0].error
    )
    assert re.search(
        rf"answered 503 to POST /accounts/\S+/deposits: \w+: {re.escape(store)}", load.server.log()
    )
    slowest = max(o.elapsed for o in load.outcomes)
    assert slowest < 12, f"a request hung for {slowest:.1f}s"
    assert set(ready_statuses) == {503} or ready_statuses.count(503) >= len(ready_statuses) - 1, (
        ready_statuses
    )
    first_success = min(o.finished for o in load.outcomes if o.status == 200 and o.finished > ended)
    recovery = first_success - ended
    assert recovery < 5, f"serving again only {recovery:.1f}s after the database came back"
    last_refusal = max(o.finished for o in refusals) - ended
    return (
        f"{audit.line()}; 503s during the outage {len(refusals)}, slowest answer {slowest:.2f}s, "
        f"first success {recovery:.2f}s after the database was back, last 503 {last_refusal:+.2f}s"
    )


def test_postgres_outage_answers_503_then_recovers_without_restart(
    uwsgi_server: StartServer, report: Any, tmp_path: Path
) -> None:
    """PostgreSQL stopped for 5 s under load, then started again: see ``check_outage``."""
    with PostgresServer() as database:
        url = database.create_database("outage")
        migrate(url)
        env = {"UWSGI_ES_DATABASE_URL": url}
        server = uwsgi_server(INI, env=env, options=["--processes", "4"])
        load, began, ended, ready = outage_under_load(server, database.stop_server, database.start_server)
        report(
            "database outage (5 s)",
            env,
            check_outage(load, began, ended, ready, "SQLAlchemy store at postgresql"),
        )


def test_cassandra_outage_answers_503_then_recovers_without_restart(
    uwsgi_server: StartServer, report: Any, cassandra_settings: Settings
) -> None:
    """A dedicated Cassandra node stopped for 5 s under load, then restarted: see ``check_outage``.
    Restarting a node takes ~10 s, so 'back' means: answering CQL again."""
    with CassandraNode(PROJECT / ".cache" / "cassandra") as node:
        settings = replace(cassandra_settings, cassandra_port=node.native_port)
        store = create_record_store(settings)
        store.create_schema()
        store.close()
        env = {
            "UWSGI_ES_STORE": "cassandra",
            "UWSGI_ES_CASSANDRA_PORT": str(node.native_port),
            "UWSGI_ES_CASSANDRA_KEYSPACE": settings.cassandra_keyspace,
        }
        server = uwsgi_server(INI, env=env, options=["--processes", "4"])
        load, began, ended, ready = outage_under_load(server, node.stop_process, node.start_process)
        report(
            "database outage (5 s)",
            env,
            check_outage(load, began, ended, ready, "cassandra store at 127.0.0.1"),
        )


def test_fail_fast_with_an_invalid_setting_stops_uwsgi_at_once(tmp_path: Path, report: Any) -> None:
    """Prefork + UWSGI_ES_FAIL_FAST: the master validates the settings (no connection) and exits."""
    env = {"UWSGI_ES_FAIL_FAST": "true", "UWSGI_ES_POOL_SIZE": "lots"}
    server = UwsgiServer(INI, env=env, log_dir=tmp_path, startup_timeout=20)
    started = time.monotonic()
    with pytest.raises(UwsgiStartError, match="exited with code"):
        server.start()
    took = time.monotonic() - started
    code = server.process.returncode if server.process else None
    assert code not in (0, None)
    assert took < 5
    assert "UWSGI_ES_POOL_SIZE='lots' is not a whole number" in server.log()
    assert list(lifecycle_events(server.log(), "build")) == []
    report(
        "initialiser failure, fail-fast (invalid setting)",
        env,
        f"uWSGI exited with code {code} after {took:.1f}s",
    )


@pytest.mark.parametrize("mode", ["prefork", "lazy-apps"])
def test_fail_fast_with_an_unreachable_database_stops_uwsgi_without_a_respawn_storm(
    tmp_path: Path, report: Any, mode: str
) -> None:
    """UWSGI_ES_FAIL_FAST: the first worker that cannot connect stops uWSGI with the failed-app
    code (22), within a few seconds, in the default prefork mode as with lazy-apps + need-app;
    the other workers, still connecting, stop at once, with no traceback."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    env = {"UWSGI_ES_FAIL_FAST": "1", "UWSGI_ES_DATABASE_URL": url, "UWSGI_ES_CONNECT_TIMEOUT": "2"}
    options = ["--lazy-apps"] if mode == "lazy-apps" else []
    server = UwsgiServer(INI, env=env, options=options, log_dir=tmp_path, startup_timeout=30)
    started = time.monotonic()
    with pytest.raises(UwsgiStartError, match="exited with code 22"):
        server.start()
    took = time.monotonic() - started
    # The workers' builds (the projection mule retries its own, and may fail first).
    failures = [f for f in lifecycle_events(server.log(), "build_failed") if not f.get("mule")]
    attempts = len(failures)
    assert 1 <= attempts <= 4, f"{attempts} build attempts: a respawn storm"
    assert took < 10
    assert failures[0]["consequence"] == "UWSGI_ES_FAIL_FAST is on: stopping uWSGI"
    assert failures[0]["error"].startswith("StoreUnavailableError: SQLAlchemy store at postgresql")
    assert "Traceback" not in server.log()
    assert "NO MERCY" not in server.log()
    report(
        f"initialiser failure, fail-fast (unreachable database, {mode})",
        env,
        f"exit code 22 after {took:.1f}s, {attempts} attempts",
    )


def test_unreachable_database_at_start_answers_503_then_recovers(
    uwsgi_server: StartServer, report: Any
) -> None:
    """Without fail-fast: workers that cannot connect answer 503 (never 200, never a hang), retry
    with back-off, and serve once the database appears, without restarting uWSGI."""
    database = PostgresServer()
    port = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/app"
    env = {
        "UWSGI_ES_DATABASE_URL": url,
        "UWSGI_ES_INIT_RETRY_SECONDS": "0.5",
        "UWSGI_ES_INIT_RETRY_MAX_SECONDS": "2",
    }
    server = uwsgi_server(INI, env=env, options=["--processes", "2"], wait_for="health")
    answers = [server.get(path) for path in ("/ready", "/worker", "/accounts/" + "0" * 32) * 5]
    assert {a.status for a in answers} == {503}
    assert {a.json()["error"] for a in answers} == {"the event store is unavailable"}
    assert all("SQLAlchemy store at postgresql" in a.json()["detail"] for a in answers[1::3])
    assert "SQLAlchemy store at postgresql" in server.log()
    assert max(a.elapsed for a in answers) < 5
    try:
        database.start(port=port)
        migrate(database.create_database("app"))
        appeared = time.monotonic()
        server.wait_until_ready()
        recovered = time.monotonic() - appeared
    finally:
        database.stop()
    assert recovered < 10
    report(
        "initialiser failure (database unreachable at start)",
        env,
        f"{len(answers)} requests answered 503; served {recovered:.1f}s after the database appeared",
    )


def test_killed_workers_with_clients_that_retry_with_their_key(
    uwsgi_server: StartServer, sql_backend_env: dict[str, str], report: Any
) -> None:
    """The killed-workers scenario with careful clients: every deposit carries an Idempotency-Key
    and is sent again after any failure until answered. Every deposit ends acknowledged, stored
    exactly once, although some first attempts were stored and their answers lost."""
    server = uwsgi_server(INI, env=sql_backend_env, options=["--processes", "4"])
    load = DepositLoad(server, one_writer_per_account=True, retry_with_key=True).start()
    kills = len(kill_a_worker_every_2s(server, random.Random(13)))
    time.sleep(1)
    load.stop()
    server.wait_until_ready()
    audit = load.audit()
    audit.check()
    assert audit.retried > 0, f"no kill hit a request in flight: {audit.line()}"
    report(
        "killed workers, clients retry with Idempotency-Key",
        sql_backend_env,
        f"{kills} workers SIGKILLed over {KILL_SECONDS:.0f}s; {audit.line()}",
    )


def test_full_reload_with_clients_that_retry_with_their_key(
    uwsgi_server: StartServer, sql_backend_env: dict[str, str], report: Any, tmp_path: Path
) -> None:
    """The full-reload scenario with careful clients: acknowledged 100 %, lost 0, duplicated 0."""
    trigger = aged_trigger(tmp_path)
    options = ["--processes", "4", "--touch-reload", str(trigger)]
    server = uwsgi_server(INI, env=sql_backend_env, options=options)
    load, before, _ = reload_under_load(server, trigger, retry_with_key=True)
    audit = load.audit()
    audit.check()
    report(
        "full reload, clients retry with Idempotency-Key",
        sql_backend_env,
        f"{len(before)} workers replaced at once; {audit.line()}",
    )
