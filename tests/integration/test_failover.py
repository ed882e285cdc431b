"""A PostgreSQL standby taking over under write load (issue 24, part 2): the shipped launch
(deploy/uwsgi-postgres.ini, 4 workers and the balances mule) on a multi-host URL with
``target_session_attrs=read-write``; the primary is SIGKILLed (postmaster and every backend) and
the streaming standby promoted 1 s later, as a failover manager would. With synchronous
replication nothing acknowledged is lost; with asynchronous replication what was lost is counted.
Either way: nothing stored twice, no 500, writes resume without restarting uWSGI, the feed keeps
its order for a tailing reader, the mule resumes, and the old primary, rejoined as a standby,
takes no writes."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from uwsgi_es.cli import migrate
from uwsgi_es.settings import Settings
from uwsgi_es.testing import PostgresServer, UwsgiServer
from uwsgi_es.testing.postgres import FAST_SETTINGS

from ..conftest import EXAMPLE
from ..support.load import DepositLoad
from ..support.paths import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.reliability]
POSTGRES_INI = PROJECT / "deploy" / "uwsgi-postgres.ini"
# fsync stays off (a killed process loses nothing the kernel holds); a commit waits for its WAL.
REPLICATED_SETTINGS = {**FAST_SETTINGS, "synchronous_commit": "on"}
BEFORE_KILL = 3.0  # seconds of load before the primary is killed
PROMOTE_AFTER = 1.0  # seconds from the kill to the promotion (what a failover manager takes, at best)
AFTER_PROMOTION = 4.0
StartServer = Any


def scalar(url: str, query: str) -> Any:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            result = connection.execute(text(query))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def wait_for(url: str, query: str, what: str, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while not scalar(url, query):
        assert time.monotonic() < deadline, f"{what} within {bound:g}s"
        time.sleep(0.1)


@pytest.fixture
def servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A primary and its streaming standby, the database ``bank`` migrated on the primary."""
    with ExitStack() as stack:
        primary = stack.enter_context(PostgresServer(settings=REPLICATED_SETTINGS))
        migrate(Settings(database_url=primary.create_database("bank"), application=EXAMPLE))
        standby = PostgresServer(settings=REPLICATED_SETTINGS)
        stack.callback(standby.stop)
        standby.start_standby_of(primary)
        wait_for(
            primary.url(),
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            "the standby streams",
        )
        yield primary, standby


class FeedTail:
    """A reader paging through /events?after=N through the failover (503s retried)."""

    def __init__(self, server: UwsgiServer) -> None:
        self.server = server
        self.seen: list[int] = []
        self.refused = 0
        self._running = threading.Event()
        self._running.set()
        self._thread = threading.Thread(target=self._tail, daemon=True)
        self._thread.start()

    def _tail(self) -> None:
        after = 0
        while self._running.is_set():
            try:
                page = self.server.get(f"/events?after={after}&limit=200", timeout=10)
            except OSError:
                page = None
            if page is None or page.status != 200:
                self.refused += 1
                time.sleep(0.05)
                continue
            body = page.json()
            self.seen.extend(event["id"] for event in body["events"])
            after = body["next_after"]
            if not body["events"]:
                time.sleep(0.01)

    def stop(self) -> None:
        self._running.clear()
        self._thread.join(20)


def whole_feed(server: UwsgiServer) -> list[int]:
    positions: list[int] = []
    after = 0
    while page := server.get(f"/events?after={after}&limit=1000").json()["events"]:
        positions += [event["id"] for event in page]
        after = page[-1]["id"]
    return positions


@pytest.mark.parametrize("replication", ["synchronous", "asynchronous"])
def test_a_standby_takes_over_under_load(
    uwsgi_server: StartServer, servers: tuple[PostgresServer, PostgresServer], replication: str, report: Any
) -> None:
    primary, standby = servers
    if replication == "synchronous":
        admin = primary.url()
        scalar(admin, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        scalar(admin, "SELECT pg_reload_conf()")
        wait_for(
            admin, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", "the standby is sync"
        )
    hosts = f"host=127.0.0.1:{primary.port}&host=127.0.0.1:{standby.port}"
    url = f"postgresql+psycopg://postgres@/bank?{hosts}&target_session_attrs=read-write"
    server = uwsgi_server(POSTGRES_INI, env={"UWSGI_ES_DATABASE_URL": url, "UWSGI_ES_CONNECT_TIMEOUT": "2"})
    load = DepositLoad(server, threads=8, one_writer_per_account=True).start()
    tail = FeedTail(server)
    time.sleep(BEFORE_KILL)
    primary.kill()
    killed = time.monotonic()  # every process of it signalled
    time.sleep(PROMOTE_AFTER)
    standby.promote()
    promoted = time.monotonic()
    time.sleep(AFTER_PROMOTION)
    load.stop()
    server.wait_until_ready()

    audit = load.audit()
    statuses = audit.statuses
    # 503: refused, nothing stored; 504: the connection broke mid-write (may be stored); never a 500
    assert not [s for s in statuses if s not in (0, 200, 503, 504)], audit.line()
    assert audit.duplicated == 0, audit.line()
    assert audit.stored_after_refusal == 0, audit.line()
    assert audit.versions_contiguous, audit.line()
    if replication == "synchronous":
        assert audit.lost == 0, audit.line()
    after_kill = [o for o in load.outcomes if o.status == 200 and o.finished - o.elapsed > killed]
    assert after_kill, "no write was acknowledged after the failover"
    first_write = min(o.finished for o in after_kill) - killed
    slowest = max(o.elapsed for o in load.outcomes)
    assert slowest < 10, f"a request hung {slowest:.1f}s (connect timeout 2 s per host)"

    # The feed: the reader's positions increase, each once; every one it saw is still there
    # (synchronous) and the feed goes on after the promotion.
    tail.stop()
    assert all(a < b for a, b in itertools.pairwise(tail.seen)), "the feed went back or repeated"
    everything = whole_feed(server)
    vanished = set(tail.seen) - set(everything)
    if replication == "synchronous":
        assert not vanished, f"{len(vanished)} events the reader saw are gone"
    # The mule resumed from its tracking record: the read model answers for the last write.
    last = str(everything[-1])
    for account in load.account_ids:
        read = server.get(f"/balances/{account}", headers={"X-Min-Position": last})
        assert read.status == 200, read.body
        assert read.json()["balance"] == server.get(f"/accounts/{account}").json()["balance"]

    # The old primary, rejoined as a standby (the documented way back), takes no writes: new
    # connections pass it by for the promoted server.
    primary.rejoin_as_standby_of(standby)
    assert scalar(primary.url("bank"), "SELECT pg_is_in_recovery()") is True
    with pytest.raises(DBAPIError, match="read-only transaction"):
        scalar(primary.url("bank"), "CREATE TABLE split_brain (x int)")
    account = load.account_ids[0]
    before = server.get(f"/accounts/{account}").json()["balance"]
    assert all(server.post(f"/accounts/{account}/deposits", {"amount": 1}).status == 200 for _ in range(10))
    assert server.get(f"/accounts/{account}").json()["balance"] == before + 10
    assert scalar(standby.url("bank"), "SELECT pg_is_in_recovery()") is False

    report(
        f"failover to a standby ({replication} replication)",
        {"UWSGI_ES_DATABASE_URL": url},
        f"primary SIGKILLed under 8 clients, standby promoted {PROMOTE_AFTER:g}s later; {audit.line()}; "
        f"promotion done {promoted - killed:.1f}s after the kill, first write acknowledged "
        f"{first_write:.1f}s after the kill, slowest answer {slowest:.1f}s; "
        f"a tailing reader saw {len(tail.seen)} events in order, {len(vanished)} of them gone after "
        "the failover; "
        "the old primary rejoined as a standby took no writes",
    )
