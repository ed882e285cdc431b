"""The global feed under concurrent writers: a tailing reader sees every event once, in order."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from ..support.checks import fan_out
from ..support.paths import INI, PROJECT

pytestmark = pytest.mark.integration
StartServer = Any


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(ini, database URL) for each SQL backend; the PostgreSQL server starts on first use."""
    if request.param == "sqlite":
        return str(INI), request.getfixturevalue("sqlite_url")
    return str(PROJECT / "deploy" / "uwsgi-postgres.ini"), request.getfixturevalue("postgres_url")


def test_tailing_reader_sees_every_event_exactly_once_in_order(
    uwsgi_server: StartServer, backend: tuple[str, str]
) -> None:
    """16 writers (4 workers of 4 threads) deposit while a reader pages through /events?after=N:
    it never skips an event that commits late, never sees one twice, and repeated reads of the
    whole feed give the same order. (SQLite admits one writer at a time; PostgreSQL writers commit
    concurrently, and the feed shows only positions below the oldest transaction in flight, so an
    acknowledged event appears once the transactions older than it end: the reader tails until
    it has seen all of them, within a bound.)"""
    ini, url = backend
    threads = ["--threads", "4", "--async", "0", "--loop", "simple"]  # as uwsgi.ini says for threads
    server = uwsgi_server(ini, env={"UWSGI_ES_DATABASE_URL": url}, options=["--processes", "4", *threads])
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
    statuses = fan_out(
        800,
        lambda i: server.post(f"/accounts/{accounts[i % 8]}/deposits", {"amount": 1}).status,
        concurrency=16,
    )
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
    print(f"feed ({url.split(':')[0]}): {len(seen)} events tailed while 4 workers wrote, none skipped")
