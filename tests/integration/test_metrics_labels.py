"""No client can spend a worker's metrics slot (511 numbers): a flood of odd requests (every
method, unknown paths, bad bodies and queries on every route) creates no series a client chose, and
leaves room for the 503 series of an outage that follows."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from uwsgi_es.metrics.recorder import METHODS, STATUSES

from ..support.paths import INI
from .test_metrics import scrape, value

pytestmark = pytest.mark.integration
StartServer = Any
ROUTES = {
    "/health",
    "/ready",
    "/worker",
    "/metrics",
    "/accounts",
    "/accounts/<account_id>",
    "/accounts/<account_id>/deposits",
    "/accounts/<account_id>/withdrawals",
    "/accounts/<account_id>/events",
    "/events",
    "/balances",
    "/balances/<account_id>",
    "unmatched",
}
ODD_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW", "PROPFIND"]


def odd_requests(account: str) -> list[tuple[str, str, str | None, dict[str, str]]]:
    """(method, path, body, headers) of a client trying every combination it can think of."""
    rng = random.Random(29)
    paths = [
        "/health",
        "/ready",
        "/worker",
        "/metrics?x=1",
        "/accounts",
        f"/accounts/{account}",
        f"/accounts/{uuid4()}",
        "/accounts/not-a-uuid",
        f"/accounts/{account}/deposits",
        f"/accounts/{uuid4()}/deposits",
        f"/accounts/{account}/withdrawals",
        f"/accounts/{account}/events?limit=0",
        f"/accounts/{account}/events?after=x",
        "/events?limit=5000",
        "/events",
        "/balances?top=0",
        "/balances",
        f"/balances/{uuid4()}",
        "/balances/nope",
    ] + [f"/{rng.randrange(10**9)}/{rng.choice(['a', 'b', 'c'])}" for _ in range(10)]
    bodies: list[tuple[str | None, dict[str, str]]] = [
        (None, {}),
        ('{"amount": -1, "owner": 5}', {"Content-Type": "application/json"}),
        ('{"amount": 10000000}', {"Content-Type": "application/json"}),
        ('{"amount": 100000000000}', {"Content-Type": "application/json"}),  # 409 from withdrawals
        ('{"owner": "odd"}', {"Content-Type": "application/json"}),
        ("{not json", {"Content-Type": "application/json"}),
        ("owner=odd", {"Content-Type": "application/x-www-form-urlencoded"}),
    ]
    special: list[tuple[str | None, dict[str, str]]] = [  # sent with GET and POST only
        ('{"amount": 1}', {"Content-Type": "application/json", "Idempotency-Key": "same-key-29"}),
        ('{"amount": 2}', {"Content-Type": "application/json", "Idempotency-Key": "same-key-29"}),
        (None, {"X-Min-Position": "abc"}),
        (None, {"X-Min-Position": "999999999"}),  # a read waits for its projection, then 503
        ("x", {"Content-Type": "application/json", "Content-Length": "100000000"}),
        ("1\r\nx\r\n0\r\n\r\n", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}),
        ('{"amount": 1}', {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
    ]
    return (
        [
            (method, path, body, headers)
            for method, path, (body, headers) in itertools.product(ODD_METHODS, paths, bodies)
        ]
        + [
            (method, path, body, headers)
            for method, path, (body, headers) in itertools.product(["GET", "POST"], paths, special)
        ]
        + [
            ("HEAD", path, None, headers)
            for path in paths
            for _, headers in special
            if "X-Min-Position" in headers
        ]
    )


def test_a_flood_of_odd_requests_leaves_room_for_an_outage(
    uwsgi_server: StartServer, sqlite_url: str
) -> None:
    """On one worker, ~2,000 odd requests: every label is the application's (a route pattern or
    `unmatched`, one of the usual methods or `other`, HEAD counted as GET, a status the API
    answers), nothing is dropped; then the database file is deleted and each route's 503 series
    is counted, still without a number dropped."""
    env = {"UWSGI_ES_DATABASE_URL": sqlite_url, "UWSGI_ES_READ_WAIT": "0.01"}
    server = uwsgi_server(INI, env=env, options=["--processes", "1"])
    account = server.post("/accounts", {"owner": "flooded"}).json()["id"]
    flood = odd_requests(account)
    answered = {
        server.request(method, path, body, headers=headers).status for method, path, body, headers in flood
    }
    assert {200, 201, 400, 404, 405, 411, 413, 415, 422, 503} <= answered, answered
    samples = scrape(server)
    assert value(samples, "uwsgi_es_metrics_dropped_total") == 0
    for labels in samples["uwsgi_es_requests_total"]:
        shown = dict(labels)
        assert shown["route"] in ROUTES, shown
        assert shown["method"] in METHODS | {"other"}, shown
        assert (
            int(shown["status"]) in STATUSES if shown["status"].isdigit() else shown["status"].endswith("xx")
        )
    assert not [
        labels
        for labels in samples["uwsgi_es_requests_total"]
        if ("method", "HEAD") in labels and ("route", "unmatched") not in labels
    ]

    before = samples
    # The outage: the database file is gone; every route that needs it answers 503.
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        file.unlink(missing_ok=True)
    outage = [
        ("GET", f"/accounts/{account}", "/accounts/<account_id>"),
        ("POST", "/accounts", "/accounts"),
        ("POST", f"/accounts/{account}/deposits", "/accounts/<account_id>/deposits"),
        ("POST", f"/accounts/{account}/withdrawals", "/accounts/<account_id>/withdrawals"),
        ("GET", f"/accounts/{account}/events", "/accounts/<account_id>/events"),
        ("GET", "/events", "/events"),
        ("GET", "/balances", "/balances"),
        ("GET", f"/balances/{account}", "/balances/<account_id>"),
    ]
    for method, target, _ in outage:
        body = '{"owner": "x", "amount": 1}' if method == "POST" else None
        body = '{"amount": 1}' if "deposits" in target or "withdrawals" in target else body
        body = '{"owner": "x"}' if target == "/accounts" else body
        for _ in range(3):
            answer = server.request(method, target, body, headers={"Content-Type": "application/json"})
            assert answer.status == 503, (target, answer.body)
    samples = scrape(server)
    for method, _, route in outage:
        counted = value(samples, "uwsgi_es_requests_total", method=method, route=route, status="503")
        assert (
            counted - value(before, "uwsgi_es_requests_total", method=method, route=route, status="503") == 3
        )
        assert value(samples, "uwsgi_es_request_duration_seconds_count", method=method, route=route) >= 3
    assert value(samples, "uwsgi_es_metrics_dropped_total") == 0
