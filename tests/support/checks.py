"""Driving a real server: many requests at once, every event of an account, and the proofs that
every worker built exactly one application, in itself (from /worker and from the lifecycle log)."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from uwsgi_es.testing import HttpResult, UwsgiServer, lifecycle_events

T = TypeVar("T")


def fan_out(count: int, call: Callable[[int], T], concurrency: int = 32) -> list[T]:
    """Run ``call(i)`` for i in range(count), ``concurrency`` at a time; results in order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(call, range(count)))


def all_events(server: UwsgiServer, account: str) -> list[dict[str, Any]]:
    """Every event of an account, page after page (GET /accounts/{id}/events is paged)."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = server.get(f"/accounts/{account}/events?after={after}&limit=1000").json()
        events += page["events"]
        if not page["events"]:
            return events
        after = page["next_after"]


def worker_reports(server: UwsgiServer, count: int, concurrency: int = 32) -> list[dict[str, int]]:
    results: list[HttpResult] = fan_out(count, lambda _: server.get("/worker"), concurrency)
    assert all(r.status == 200 for r in results), [r.body for r in results if r.status != 200][:3]
    return [r.json() for r in results]


def assert_one_application_per_worker(server: UwsgiServer, reports: list[dict[str, int]]) -> set[int]:
    """Every answering pid built exactly one application, itself, with one subscription."""
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert report["constructions"] == 1, report
        assert report["subscriptions"] == 1, report
        assert report["worker_id"] >= 1, report
    pids = {r["pid"] for r in reports}
    assert server.pid not in pids, "the master served a request"
    return pids


def move_money_concurrently(server: UwsgiServer, operations: int = 600, concurrency: int = 32) -> str:
    """Deposits and withdrawals on 3 accounts, ``concurrency`` at a time, then the proof: every
    acknowledged operation is stored exactly once, versions are 1..n, no balance ever dips below
    zero, and each final balance is the sum of what was acknowledged. Returns the figures."""
    accounts = [server.post("/accounts", {"owner": f"acct {i}"}).json()["id"] for i in range(3)]
    rng = random.Random(7)
    plan = [
        (accounts[rng.randrange(3)], rng.choice(["deposits", "deposits", "withdrawals"]), rng.randint(1, 50))
        for _ in range(operations)
    ]

    def run(i: int) -> tuple[str, str, int, int, str]:
        account, kind, amount = plan[i]
        result = server.post(f"/accounts/{account}/{kind}", {"amount": amount})
        return account, kind, amount, result.status, result.json().get("error", "")

    outcomes = fan_out(len(plan), run, concurrency=concurrency)
    assert {status for *_, status, _ in outcomes} <= {200, 409}, [
        o for o in outcomes if o[3] not in (200, 409)
    ][:3]
    for account in accounts:
        acknowledged = [o for o in outcomes if o[0] == account and o[3] == 200]
        events = all_events(server, account)
        assert [e["version"] for e in events] == list(range(1, len(acknowledged) + 2))
        running = 0
        for event in events[1:]:
            running += event["state"]["amount"] * (1 if event["topic"].endswith("Deposited") else -1)
            assert running >= 0
        expected = sum(a if k == "deposits" else -a for _, k, a, _, _ in acknowledged)
        assert server.get(f"/accounts/{account}").json()["balance"] == running == expected
    reports = {r["pid"]: r for r in worker_reports(server, 200)}
    funds = sum(1 for *_, status, error in outcomes if status == 409 and "insufficient funds" in error)
    conflicts = sum(1 for *_, status, error in outcomes if status == 409 and "insufficient" not in error)
    return (
        f"{len(plan)} operations, {sum(1 for o in outcomes if o[3] == 200)} acknowledged, "
        f"{funds} refused for insufficient funds, {conflicts} refused after exhausting retries; "
        f"{len(reports)} workers sampled saw {sum(r['conflicts'] for r in reports.values())} conflicts "
        f"and {sum(r['retries'] for r in reports.values())} retries"
    )


def builds(server: UwsgiServer) -> collections.Counter[int]:
    """How many applications each pid built, from the lifecycle log's ``build`` events."""
    return collections.Counter(int(e["pid"]) for e in lifecycle_events(server.log(), "build"))


def built_once_each(server: UwsgiServer) -> collections.Counter[int]:
    """Every pid that built an application built exactly one."""
    counts = builds(server)
    assert counts, "no worker logged a build"
    assert set(counts.values()) == {1}, counts
    return counts
