"""The PostgreSQL feed under real uWSGI (4 workers and the balances mule) with transactions open
outside it (issue 29 item 3): one that appends no event, in any database, no longer holds /events,
the projection or reads of one's own writes; one that appends still does (nothing is skipped),
and the lag on /worker, /ready and /metrics counts the events stored after it."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import pytest

from uwsgi_es.application import EventStore
from uwsgi_es.example.domain import BankAccount
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.testing import PostgresServer, UwsgiServer
from uwsgi_es.testing.postgres import ExistingPostgres

from ..support.load import DepositLoad, Outcome
from ..support.outside_sessions import outside_transactions
from ..support.paths import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
POSTGRES_INI = PROJECT / "deploy" / "uwsgi-postgres.ini"
PROBES = 40  # writes followed in the feed and read back, one every PROBE_EVERY seconds
PROBE_EVERY = 0.1
HELD_DEPOSITS = 20
PAUSE = 0.02  # between one client's deposits: 4 flat out outpace one projection mule here
LAG = re.compile(r'^uwsgi_es_projection_lag_events\{projection="balances"\} (\S+)$', re.MULTILINE)


def visible_within(server: UwsgiServer, position: int, bound: float = 10.0) -> float:
    """Seconds until /events shows ``position`` (fails after ``bound``)."""
    started = time.monotonic()
    while True:
        events = server.get(f"/events?after={position - 1}&limit=1").json()["events"]
        if events and events[0]["id"] == position:
            return time.monotonic() - started
        assert time.monotonic() - started < bound, f"position {position} not in the feed after {bound:g}s"
        time.sleep(0.005)


def feed_after(server: UwsgiServer, after: int) -> list[int]:
    """Every position /events shows after ``after``."""
    positions: list[int] = []
    while page := server.get(f"/events?after={after}&limit=1000").json()["events"]:
        positions += [event["id"] for event in page]
        after = page[-1]["id"]
    return positions


@dataclass
class PacedLoad(DepositLoad):
    """Clients that pause between deposits: what a read asking for its write then meets is the
    feed's horizon, not a projection mule outpaced on a machine shared with other work."""

    def _deposit(self, account: str, amount: int) -> Outcome:
        time.sleep(PAUSE)
        return super()._deposit(account, amount)


def worker_lag(server: UwsgiServer) -> int:
    return int(server.get("/worker").json()["projections"]["balances"]["lag"])


def ready_lag(server: UwsgiServer) -> int:
    ready = server.get("/ready")
    assert ready.status == 200, ready.body
    return int(ready.json()["projections"]["balances"]["lag"])


def metrics_lag(server: UwsgiServer) -> int:
    scraped = server.get("/metrics")
    assert scraped.status == 200, scraped.body
    found = LAG.search(scraped.body.decode())
    assert found, scraped.body.decode()[-2000:]
    return int(float(found.group(1)))


def reported(lag: Callable[[UwsgiServer], int], server: UwsgiServer, expected: int) -> int:
    """What ``lag`` reports once it says ``expected``, or after 15 s (/ready answers from a check
    at most a second old: ``uwsgi_es.web.ops.READY_RECHECK_SECONDS``)."""
    deadline = time.monotonic() + 15
    while (found := lag(server)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.mark.reliability
def test_the_feed_with_an_outside_transaction_open(
    uwsgi_server: Any, postgres: PostgresServer | ExistingPostgres, postgres_url: str, report: Any
) -> None:
    """Phase 1: in another database a session holds a transaction id and idles, another runs
    pg_sleep; in this one a session wrote a row of its own table and idles. Under 4 depositing
    clients (20 ms apart each), each of 40 writes is in /events within a second and a read asking
    for it (X-Min-Position) answers 200. Phase 2: a uwsgi_es writer appends an event in a transaction it
    keeps open (a store used directly, in a keyed request's transaction); 20 deposits made after
    it are stored but not shown (a reader past them would skip its event), and the lag says 20
    on /worker, /ready and /metrics; on its commit the feed shows its event, then the 20, once each."""
    env = {"UWSGI_ES_DATABASE_URL": postgres_url}
    server = uwsgi_server(POSTGRES_INI, env=env)
    probe = server.post("/accounts", {"owner": "probe"}).json()["id"]
    with ExitStack() as closing:
        closing.enter_context(outside_transactions(postgres, postgres_url))
        load = PacedLoad(server, threads=4, one_writer_per_account=True).start()
        try:
            shown: list[float] = []
            answered: list[int] = []
            for _ in range(PROBES):
                written = server.post(f"/accounts/{probe}/deposits", {"amount": 1})
                assert written.status == 200, written.body
                position = int(written.headers["x-event-position"])
                shown.append(visible_within(server, position))
                read = server.get(f"/balances/{probe}", headers={"X-Min-Position": str(position)})
                answered.append(read.status)
                time.sleep(PROBE_EVERY)
        finally:
            load.stop()
        audit = load.audit()
        audit.check()
        assert max(shown) < 1.0, f"the feed took up to {max(shown):.2f}s to show a write"
        assert answered == [200] * PROBES, answered

        assert reported(worker_lag, server, 0) == 0, "the projection did not catch up"
        held = SQLAlchemyRecordStore.from_settings(Settings(database_url=postgres_url))
        closing.callback(held.close)
        before = feed_after(server, 0)[-1]
        outsider = BankAccount.open("an outside writer")
        with held.remembering(f"outside-{uuid4()}", "digest", 0.0):
            held_position = held.append([EventStore(held).to_record(e) for e in outsider.collect_events()])
            deposited = []
            for _ in range(HELD_DEPOSITS):
                written = server.post(f"/accounts/{probe}/deposits", {"amount": 1})
                assert written.status == 200, written.body
                deposited.append(int(written.headers["x-event-position"]))
            assert feed_after(server, before) == [], "the feed passed a transaction that may still append"
            lags = [reported(lag, server, HELD_DEPOSITS) for lag in (worker_lag, ready_lag, metrics_lag)]
            waiting = server.get(f"/balances/{probe}", headers={"X-Min-Position": str(deposited[-1])})
    assert lags == [HELD_DEPOSITS] * 3, "/worker, /ready, /metrics"
    assert waiting.status == 503, waiting.body
    assert "UWSGI_ES_READ_WAIT" in waiting.json()["error"]
    assert feed_after(server, before) == [held_position, *deposited]
    assert reported(worker_lag, server, 0) == 0, "the projection did not catch up after the commit"
    median = statistics.median(shown) * 1000
    report(
        "the feed with an outside transaction open",
        env,
        f"3 outside transactions open (another database: one idle holding an id, one in pg_sleep; "
        f"this one: one idle after writing its own table): each of {PROBES} writes under 4 "
        f"depositing clients ({PAUSE * 1000:.0f} ms apart each) in /events within {median:.0f} ms "
        f"median, {max(shown) * 1000:.0f} ms max, {answered.count(200)}/{PROBES} reads asking for it "
        f"200; a writer's transaction "
        f"held open after appending: the {HELD_DEPOSITS} deposits after it stored, not shown, lag "
        f"{lags[0]} on /worker, {lags[1]} on /ready, {lags[2]} on /metrics; on commit "
        f"all {HELD_DEPOSITS + 1} shown in order, none skipped; {audit.line()}",
    )
