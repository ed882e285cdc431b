"""The global feed under concurrent writers: a tailing reader sees every event once, in order."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, text

from ..support.checks import fan_out
from ..support.paths import INI, PROJECT

pytestmark = pytest.mark.integration
StartServer = Any


@pytest.fixture(params=["sqlite", "postgres", "postgres via PgBouncer"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(ini, database URL) for each SQL backend, PostgreSQL also through PgBouncer in transaction
    pooling (deploy/pgbouncer.ini, 3 server connections for the 16 writers); servers start on
    first use."""
    if request.param == "sqlite":
        return str(INI), request.getfixturevalue("sqlite_url")
    url = request.getfixturevalue("postgres_url" if request.param == "postgres" else "pgbouncer_url")
    return str(PROJECT / "deploy" / "uwsgi-postgres.ini"), url


@contextmanager
def outside_transaction(request: pytest.FixtureRequest, url: str) -> Iterator[None]:
    """On PostgreSQL, a session of another database of the server holding a transaction id and
    idling for the whole test (it appends no event: the feed must not wait for it)."""
    if not url.startswith("postgresql"):
        yield
        return
    other = create_engine(request.getfixturevalue("postgres").create_database(f"other_{uuid4().hex[:8]}"))
    try:
        with other.connect() as connection:
            connection.execute(text("SELECT txid_current()"))
            yield
            connection.rollback()
    finally:
        other.dispose()


def test_tailing_reader_sees_every_event_exactly_once_in_order(
    uwsgi_server: StartServer, backend: tuple[str, str], request: pytest.FixtureRequest
) -> None:
    """16 writers (4 workers of 4 threads) deposit while a reader pages through /events?after=N:
    it never skips an event that commits late, never sees one twice, and repeated reads of the
    whole feed give the same order. Every other deposit carries an Idempotency-Key: one whose
    command conflicts re-runs it in its transaction, rolled back to a savepoint (on PostgreSQL it
    then announces itself again, at a new base). (SQLite admits one writer at a time; PostgreSQL
    writers commit concurrently, and the feed shows only positions below the oldest transaction
    in flight that appends events, so an acknowledged event appears once the appending
    transactions older than it end: the reader tails until it has seen all of them, within a
    bound, while a transaction of another database, which appends none, stays open throughout.)"""
    ini, url = backend
    threads = ["--threads", "4", "--async", "0", "--loop", "simple"]  # as uwsgi.ini says for threads
    server = uwsgi_server(ini, env={"UWSGI_ES_DATABASE_URL": url}, options=["--processes", "4", *threads])
    with outside_transaction(request, url):
        _tail_while_depositing(server, url)


def _tail_while_depositing(server: Any, url: str) -> None:
    accounts = [server.post("/accounts", {"owner": f"feed {i}"}).json()["id"] for i in range(8)]
    seen: list[int] = []
    acknowledged: list[int] = []  # set once the writers are done: 8 openings + the deposits answered 200
    deadline = time.monotonic() + 60

    def tail() -> None:
        after = 0
        while (not acknowledged or len(seen) < acknowledged[0]) and time.monotonic() < deadline:
            page = server.get(f"/events?after={after}&limit=50").json()
            seen.extend(e["id"] for e in page["events"])
            after = page["next_after"]
            if not page["events"]:
                time.sleep(0.005)

    reader = threading.Thread(target=tail)
    reader.start()

    def deposit(i: int) -> int:
        keyed = {"Idempotency-Key": str(uuid4())} if i % 2 else None
        return int(server.post(f"/accounts/{accounts[i % 8]}/deposits", {"amount": 1}, headers=keyed).status)

    statuses = fan_out(800, deposit, concurrency=16)
    acknowledged.append(8 + statuses.count(200))
    reader.join(70)
    assert not reader.is_alive()
    expected = acknowledged[0]
    assert len(seen) == expected, f"the reader saw {len(seen)} of {expected} events within 60 s"

    def whole_feed() -> list[int]:
        everything: list[int] = []
        after = 0
        while page := server.get(f"/events?after={after}&limit=1000").json()["events"]:
            everything.extend(e["id"] for e in page)
            after = page[-1]["id"]
        return everything

    everything = whole_feed()
    assert seen == everything, "the tailing reader skipped or repeated events"
    assert whole_feed() == everything, "two reads of the whole feed disagree"
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert set(statuses) <= {200, 409}, statuses  # 409: a deposit's conflict retries ran out
    assert len(everything) == expected
    balances = [server.get(f"/accounts/{a}").json()["balance"] for a in accounts]
    assert sum(balances) == statuses.count(200)
    store = url.split(":", maxsplit=1)[0]
    print(f"feed ({store}): {len(seen)} events tailed while 4 workers wrote, none skipped")
