"""PostgreSQL under real uWSGI: fork safety, request-scoped sessions, concurrent writers, deploy ini."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from uwsgi_es.testing import UwsgiServer, UwsgiStartError, lifecycle_events

from ..support.checks import (
    assert_one_application_per_worker,
    fan_out,
    move_money_concurrently,
    worker_reports,
)
from ..support.paths import INI, PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
POSTGRES_INI = PROJECT / "deploy" / "uwsgi-postgres.ini"
PROBE = ["--module", "tests.apps.probe:application"]
StartServer = Any


def test_postgres_ini_serves_one_application_per_worker(uwsgi_server: StartServer, postgres_url: str) -> None:
    """deploy/uwsgi-postgres.ini (4 processes x 4 threads): every worker built once, in itself."""
    server = uwsgi_server(POSTGRES_INI, env={"UWSGI_ES_DATABASE_URL": postgres_url})
    pids = assert_one_application_per_worker(server, worker_reports(server, 400))
    assert len(pids) >= 2
    account = server.post("/accounts", {"owner": "pg"}).json()["id"]
    assert server.post(f"/accounts/{account}/deposits", {"amount": 5}).json()["balance"] == 5
    print(f"postgres ini: ready in {server.startup_seconds:.2f}s, {len(pids)} workers answered")


def test_postgres_ini_refuses_to_start_without_a_database_url(tmp_path: Any) -> None:
    server = UwsgiServer(POSTGRES_INI, log_dir=tmp_path, startup_timeout=20)
    with pytest.raises(UwsgiStartError, match="exited with code 78"):
        server.start()
    assert "set UWSGI_ES_DATABASE_URL=postgresql+psycopg://" in server.log()


def test_connection_opened_in_the_master_is_never_used_by_a_worker(
    uwsgi_server: StartServer, postgres_url: str
) -> None:
    """The master holds a pooled connection before the fork. Each worker, and each worker that
    replaces one (max-requests), uses a backend of its own; the master's backend outlives them all.

    A child that closed the inherited pool, or wrote on its socket, would end the master's
    backend: psycopg sends Terminate on close, and a confused protocol stream kills the session.
    """
    env = {"UWSGI_ES_DATABASE_URL": postgres_url, "PROBE_BUILD_IN_MASTER": "1"}
    options = [*PROBE, "--processes", "3", "--max-requests", "40", "--min-worker-lifetime", "0"]
    server = uwsgi_server(INI, env=env, options=options)
    master_backend = int(re.findall(r"probe: master \d+ holds backend (\d+)", server.log())[0])

    answers = [r.json() for r in fan_out(200, lambda _: server.get("/probe/backend"))]
    backend_of: dict[int, set[int]] = {}
    for answer in answers:
        backend_of.setdefault(answer["pid"], set()).add(answer["backend_pid"])
    worker_backends = set().union(*backend_of.values())
    assert master_backend not in worker_backends
    for pid, backends in backend_of.items():  # no two workers ever share a backend
        others = set().union(*(b for p, b in backend_of.items() if p != pid))
        assert not backends & others
    assert len(backend_of) > 3, "expected respawned workers too"
    assert_one_application_per_worker(server, worker_reports(server, 100, concurrency=8))

    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        state = connection.execute(
            text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": master_backend}
        )
        assert state.scalar_one_or_none() == "idle", (
            "the master's connection was closed or broken by a worker"
        )
    engine.dispose()
    forgot = list(lifecycle_events(server.log(), "forgot_inherited"))
    assert forgot, "no worker forgot the application it inherited from the master"
    assert {int(e["built_in_pid"]) for e in forgot} == {server.pid}


def test_a_request_failing_mid_transaction_leaves_nothing_behind(
    uwsgi_server: StartServer, postgres_url: str
) -> None:
    """After a request dies inside a transaction, the same worker's next request starts clean."""
    server = uwsgi_server(
        INI, env={"UWSGI_ES_DATABASE_URL": postgres_url}, options=[*PROBE, "--processes", "1"]
    )
    failed = server.post("/probe/fail-mid-transaction", {})
    assert failed.status == 500
    assert failed.json() == {"error": "internal error; the server log has the details"}
    after = server.get("/probe/leftovers").json()
    assert after == {"pid": after["pid"], "in_transaction": False, "checked_out": 0, "probe_rows": 0}
    assert server.get("/worker").json()["pool"] == {"checked_out": 0}


def test_concurrent_deposits_and_withdrawals_stay_consistent(
    uwsgi_server: StartServer, postgres_url: str
) -> None:
    """4 processes x 4 threads move money on 3 accounts at once: see ``move_money_concurrently``."""
    server = uwsgi_server(POSTGRES_INI, env={"UWSGI_ES_DATABASE_URL": postgres_url})
    print(f"postgres 4x4: {move_money_concurrently(server)}")
