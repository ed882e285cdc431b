"""Cassandra under real uWSGI: the deploy ini, migrate, concurrent writers with LWTs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.testing.cassandra import CassandraNode

from ..support.checks import assert_one_application_per_worker, move_money_concurrently, worker_reports
from ..support.paths import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.cassandra]
CASSANDRA_INI = PROJECT / "deploy" / "uwsgi-cassandra.ini"
StartServer = Any


def test_cassandra_ini_serves_one_application_per_worker(
    uwsgi_server: StartServer, cassandra_env: dict[str, str]
) -> None:
    """deploy/uwsgi-cassandra.ini (4 x 4): each worker connected once, after the fork."""
    server = uwsgi_server(CASSANDRA_INI, env=cassandra_env)
    pids = assert_one_application_per_worker(server, worker_reports(server, 400))
    assert len(pids) >= 2
    account = server.post("/accounts", {"owner": "cassandra"}).json()["id"]
    assert server.post(f"/accounts/{account}/deposits", {"amount": 7}).json()["balance"] == 7
    feed = server.get("/events")
    assert feed.status == 404
    assert "no global order" in feed.json()["error"]
    log = server.log()
    assert log.count("connected to Cassandra") == len(set(server.worker_pids())) == 4
    assert "WARNING" not in "\n".join(line for line in log.splitlines() if "cassandra" in line.lower())
    print(f"cassandra ini: ready in {server.startup_seconds:.2f}s")


def test_concurrent_deposits_and_withdrawals_with_lightweight_transactions(
    uwsgi_server: StartServer, cassandra_env: dict[str, str]
) -> None:
    """4 processes x 4 threads on 3 accounts: LWTs keep every balance and version sequence exact."""
    server = uwsgi_server(CASSANDRA_INI, env=cassandra_env)
    print(f"cassandra 4x4: {move_money_concurrently(server, operations=400)}")


def test_migrate_creates_keyspace_and_table_idempotently(cassandra: CassandraNode, tmp_path: Path) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "UWSGI_ES_STORE": "cassandra",
        "UWSGI_ES_CASSANDRA_PORT": str(cassandra.native_port),
        "UWSGI_ES_CASSANDRA_KEYSPACE": "migrated_by_cli",
    }
    command = [str(Path(sys.executable).parent / "uwsgi-es")]
    assert subprocess.run([*command, "check"], env=env, capture_output=True, check=False).returncode == 1
    for _ in range(2):
        result = subprocess.run([*command, "migrate"], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert "schema ready in cassandra store at 127.0.0.1" in result.stdout
    assert subprocess.run([*command, "check"], env=env, capture_output=True, check=False).returncode == 0
