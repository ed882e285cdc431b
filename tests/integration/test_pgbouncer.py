"""The shipped PostgreSQL launch (deploy/uwsgi-postgres.ini: 4 workers and the balances mule)
through PgBouncer in transaction pooling (deploy/pgbouncer.ini, 3 server connections): every
process sees the pooler and says so, the mule polls (a LISTEN cannot outlast its transaction
there) or LISTENs on UWSGI_ES_LISTEN_URL, reads of one's own writes are answered either way, a
lock held elsewhere is waited for within UWSGI_ES_LOCK_TIMEOUT, and the log is free of crashes.
(The concurrent writers and the tailing reader: test_event_feed.py; killed workers and a full
reload: test_reliability.py; the store contract: tests/stores/test_postgres.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from uwsgi_es.example.balances import balances_table
from uwsgi_es.testing import UwsgiServer, lifecycle_events

from ..support.checks import fan_out
from ..support.paths import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.pgbouncer]
POSTGRES_INI = PROJECT / "deploy" / "uwsgi-postgres.ini"
StartServer = Any


def deposit_and_read_back(server: UwsgiServer) -> tuple[list[int], list[float]]:
    """200 deposits, 16 at once, on 4 accounts; then each account's balance read from the mule's
    read model asking for the last write's position. Returns the statuses and the reads' seconds."""
    accounts = [server.post("/accounts", {"owner": f"pooled {i}"}).json()["id"] for i in range(4)]
    positions: list[int] = []

    def deposit(i: int) -> int:
        answer = server.post(f"/accounts/{accounts[i % 4]}/deposits", {"amount": i + 1})
        if answer.status == 200:
            positions.append(int(answer.headers["x-event-position"]))
        return answer.status

    statuses = fan_out(200, deposit, concurrency=16)
    last = str(max(positions))
    waits: list[float] = []
    for account in accounts:
        started = time.monotonic()
        read = server.get(f"/balances/{account}", headers={"X-Min-Position": last})
        waits.append(time.monotonic() - started)
        assert read.status == 200, read.body
        assert read.json()["balance"] == server.get(f"/accounts/{account}").json()["balance"]
    return statuses, waits


@pytest.mark.parametrize("listen", ["polling", "LISTEN on a direct URL"])
def test_the_shipped_launch_through_pgbouncer(
    uwsgi_server: StartServer, pgbouncer_url: str, postgres_url: str, listen: str, report: Any
) -> None:
    env = {"UWSGI_ES_DATABASE_URL": pgbouncer_url}
    if listen != "polling":
        env["UWSGI_ES_LISTEN_URL"] = postgres_url
    server = uwsgi_server(POSTGRES_INI, env=env)
    statuses, waits = deposit_and_read_back(server)
    assert set(statuses) <= {200, 409}, statuses  # 409: a deposit's conflict retries ran out
    assert statuses.count(200) >= 190, statuses
    log = server.log()
    detected = [e for e in lifecycle_events(log) if e["event"] == "postgres_pooler_detected"]
    # Each process says it once: the mule and the workers that served (16 at once: all 4, likely).
    assert len({e["pid"] for e in detected}) == len(detected) >= 2, detected
    polling = [e for e in lifecycle_events(log) if e["event"] == "readside_polling"]
    listening = [e for e in lifecycle_events(log) if e["event"] == "readside_listening"]
    if listen == "polling":
        assert polling, log[-3000:]
        assert "UWSGI_ES_LISTEN_URL" in polling[0]["consequence"]
        assert not listening
    else:
        assert listening, log[-3000:]
        assert not polling
    assert "Traceback" not in log, log[-3000:]
    assert 'prepared statement "' not in log, log[-3000:]  # as in: "_pg3_0" does not exist
    report(
        f"shipped launch, balances mule {listen}",
        {"UWSGI_ES_DATABASE_URL": pgbouncer_url, "ES_TEST_VIA": "PgBouncer"},
        f"200 deposits 16 at once on 3 server connections: {statuses.count(200)} acknowledged, "
        f"statuses {sorted(set(statuses))}; reads asking for the last write answered in "
        f"{max(waits) * 1000:.0f} ms at most",
    )


def test_a_lock_held_elsewhere_is_waited_for_within_the_bound(
    uwsgi_server: StartServer, pgbouncer_url: str, postgres_url: str
) -> None:
    """The lock timeout is set in each transaction through the pooler: with the events table held
    (SHARE) by a direct session, deposits answer 503 "busy" within UWSGI_ES_LOCK_TIMEOUT, and are
    acknowledged once it is released."""
    server = uwsgi_server(
        POSTGRES_INI, env={"UWSGI_ES_DATABASE_URL": pgbouncer_url, "UWSGI_ES_LOCK_TIMEOUT": "1"}
    )
    account = server.post("/accounts", {"owner": "held"}).json()["id"]
    holder = create_engine(postgres_url)
    try:
        with holder.connect() as connection:
            connection.execute(text("LOCK TABLE integer_sequenced_items IN SHARE MODE"))
            for amount in range(1, 5):
                started = time.monotonic()
                answer = server.post(f"/accounts/{account}/deposits", {"amount": amount})
                elapsed = time.monotonic() - started
                assert answer.status == 503, answer.body
                assert "busy" in answer.json()["error"], answer.body
                assert elapsed < 3, f"a deposit waited {elapsed:.1f}s for a 1 s lock timeout"
            connection.rollback()
    finally:
        holder.dispose()
    assert server.post(f"/accounts/{account}/deposits", {"amount": 5}).status == 200
    assert server.get(f"/accounts/{account}").json()["balance"] == 5


def uwsgi_es_command(*arguments: str, env: dict[str, str]) -> tuple[int, str]:
    """`uwsgi-es ARGUMENTS` beside the service, as an operator runs it: (exit status, output)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "uwsgi-es"), *arguments, "--ini", str(POSTGRES_INI)],
        check=False,
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_rebuild_through_pgbouncer_holds_its_lock_on_the_direct_url(
    uwsgi_server: StartServer, pgbouncer_url: str, postgres_url: str
) -> None:
    """The shipped launch through the pooler: `uwsgi-es rebuild balances` runs its transactions
    through PgBouncer (its search_path set in each), but its one-at-a-time lock is a session's:
    without UWSGI_ES_LISTEN_URL it refuses and names the fix, with it the new model is switched in
    and equals the balances the accounts answer; no traceback in the service's log."""
    pooled = {"UWSGI_ES_DATABASE_URL": pgbouncer_url}
    server = uwsgi_server(POSTGRES_INI, env={**pooled, "UWSGI_ES_LISTEN_URL": postgres_url})
    status, output = uwsgi_es_command("migrate", env=pooled)
    assert status == 0, output
    statuses, _ = deposit_and_read_back(server)
    assert statuses.count(200) >= 190, statuses
    status, output = uwsgi_es_command("rebuild", "balances", env=pooled)
    assert status == 1, output
    assert "set UWSGI_ES_LISTEN_URL to a direct connection" in output
    status, output = uwsgi_es_command(
        "rebuild", "balances", env={**pooled, "UWSGI_ES_LISTEN_URL": postgres_url}
    )
    assert status == 0, output
    assert "switched in" in output
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            model = dict(
                connection.execute(select(balances_table.c.account_id, balances_table.c.balance)).all()
            )
            shadows = connection.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'uwsgi_es_rebuild%'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert len(model) == 4
    for account, balance in model.items():
        assert server.get(f"/accounts/{account}").json()["balance"] == balance
    assert shadows == 0
    assert "Traceback" not in server.log()
