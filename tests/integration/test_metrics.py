"""GET /metrics on a real uWSGI: the numbers of every worker and mule added up (uWSGI's
sharedarea, uwsgi.ini), parsed with prometheus_client's own parser, still right after a worker is
SIGKILLed and respawned."""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from uwsgi_es.testing import UwsgiServer

from ..support.paths import INI

pytestmark = pytest.mark.integration

ACCOUNT = "/accounts/<account_id>"
DEPOSITS = "/accounts/<account_id>/deposits"
WITHDRAWALS = "/accounts/<account_id>/withdrawals"


def scrape(server: UwsgiServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of a scrape, by name then labels, parsed as Prometheus would."""
    answer = server.get("/metrics")
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("text/plain; version="), answer.headers
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0))


class Tally:
    """The requests this test sent that the application answered (its X-Request-ID on them),
    by (method, route, status)."""

    def __init__(self) -> None:
        self.answered: Counter[tuple[str, str, int]] = Counter()
        self.lock = threading.Lock()

    def send(self, server: UwsgiServer, method: str, path: str, route: str, **kwargs: Any) -> int:
        try:
            answer = server.request(method, path, **kwargs)
        except OSError:
            return 0  # no answer (a killed worker's request)
        if "x-request-id" in answer.headers:
            with self.lock:
                self.answered[(method, route, answer.status)] += 1
        return answer.status


def load(server: UwsgiServer, tally: Tally, accounts: list[str], rounds: int) -> None:
    """Deposits, withdrawals (some refused: too large), reads and one bad deposit per client, from
    8 clients at once, on accounts shared by all (so commands conflict and retry)."""

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(rounds):
            account = rng.choice(accounts)
            kind = rng.random()
            if kind < 0.5:
                tally.send(server, "POST", f"/accounts/{account}/deposits", DEPOSITS, json_body={"amount": 5})
            elif kind < 0.7:
                amount = rng.choice([1, 10**9])
                path = f"/accounts/{account}/withdrawals"
                tally.send(server, "POST", path, WITHDRAWALS, json_body={"amount": amount})
            else:
                tally.send(server, "GET", f"/accounts/{account}", ACCOUNT)
        tally.send(server, "POST", f"/accounts/{accounts[0]}/deposits", DEPOSITS, json_body={"amount": "x"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(client, [rounds * 1000 + n for n in range(8)]))


def test_metrics_add_up_every_worker_and_mule_across_a_killed_worker(
    uwsgi_server: Any, app_env: dict[str, str]
) -> None:
    env = {**app_env, "UWSGI_ES_READ_WAIT": "4"}
    server: UwsgiServer = uwsgi_server(INI, env=env, options=["--processes", "4"])
    tally = Tally()
    accounts = []
    for number in range(6):
        opened = server.post("/accounts", {"owner": f"metrics-{number}"})
        assert opened.status == 201
        tally.answered[("POST", "/accounts", 201)] += 1
        accounts.append(opened.json()["id"])

    # Scrapes while the load runs: each parses, and no counter ever goes down.
    scrapes: list[dict[str, Any]] = []
    loading = threading.Event()
    loading.set()

    def scraper() -> None:
        while loading.is_set():
            scrapes.append(scrape(server))
            time.sleep(0.05)

    watcher = threading.Thread(target=scraper)
    watcher.start()
    try:
        load(server, tally, accounts, rounds=40)
        # Reads that wait for a position the projection will not reach: every worker is then
        # serving one, asleep in it, when worker 2 is killed. Its own die unanswered (and are
        # not counted); the others answer 503 naming the lag.
        victim = next(w for w in server.stats()["workers"] if w["id"] == 2)["pid"]
        with ThreadPoolExecutor(max_workers=12) as pool:
            waits = [
                pool.submit(
                    tally.send,
                    server,
                    "GET",
                    "/balances",
                    "/balances",
                    headers={"X-Min-Position": str(10**15)},
                )
                for _ in range(12)
            ]
            time.sleep(1.0)
            os.kill(victim, signal.SIGKILL)
            statuses = Counter(wait.result() for wait in waits)
        assert statuses[503] >= 1, statuses
        deadline = time.monotonic() + 30
        while victim in server.worker_pids() or len(server.worker_pids()) < 4:
            assert time.monotonic() < deadline, "worker 2 was not respawned"
            time.sleep(0.1)
        server.wait_until_ready(idle=False)  # the respawned worker has built its application
        load(server, tally, accounts, rounds=40)
    finally:
        loading.clear()
        watcher.join()

    assert len(scrapes) >= 3
    for earlier, later in itertools.pairwise(scrapes):
        for labels, count in earlier.get("uwsgi_es_requests_total", {}).items():
            assert later["uwsgi_es_requests_total"].get(labels, 0.0) >= count, labels

    final = scrape(server)
    for (method, route, status), answered in sorted(tally.answered.items()):
        counted = value(final, "uwsgi_es_requests_total", method=method, route=route, status=str(status))
        assert counted == answered, f"{method} {route} {status}: counted {counted}, answered {answered}"
        latencies = value(final, "uwsgi_es_request_duration_seconds_count", method=method, route=route)
        assert latencies >= answered
    assert value(final, "uwsgi_es_requests_total", method="GET", route="/metrics", status="200") >= len(
        scrapes
    )

    # The application's own numbers, as the answers imply.
    changed = sum(
        n for (m, route, status), n in tally.answered.items() if status in (200, 201) and m == "POST"
    )
    assert value(final, "uwsgi_es_events_stored_total") == changed
    commands_done = changed - tally.answered[("POST", "/accounts", 201)]
    assert value(final, "uwsgi_es_commands_total", outcome="done") == commands_done
    refused = sum(
        n for (m, route, status), n in tally.answered.items() if route == WITHDRAWALS and status >= 400
    )
    assert refused > 0
    assert value(final, "uwsgi_es_commands_total", outcome="failed") == refused
    assert value(final, "uwsgi_es_conflicts_total") >= value(final, "uwsgi_es_conflict_retries_total")
    assert value(final, "uwsgi_es_builds_total", outcome="ok") >= 6  # 4 workers, the respawn, the mule
    assert value(final, "uwsgi_es_pool_checkouts_total") >= changed
    assert value(final, "uwsgi_es_metrics_dropped_total") == 0

    # The mule's numbers are in the sum: it projects every stored event, and its lag is read.
    deadline = time.monotonic() + 20
    while value(final, "uwsgi_es_projected_events_total", projection="balances") < changed:
        assert time.monotonic() < deadline, value(
            final, "uwsgi_es_projected_events_total", projection="balances"
        )
        time.sleep(0.2)
        final = scrape(server)
    assert value(final, "uwsgi_es_projected_events_total", projection="balances") == changed
    assert value(final, "uwsgi_es_projection_lag_events", projection="balances") == 0
    assert value(final, "uwsgi_es_projection_position", projection="balances") > 0


def test_metrics_without_the_shared_area_say_what_to_add(uwsgi_server: Any, app_env: dict[str, str]) -> None:
    """One worker's numbers would pass for the instance's: 503 naming the ini line instead.
    Counting still costs the requests nothing."""
    env = {**app_env, "UWSGI_ES_METRICS_SHAREDAREA": "7"}  # uwsgi.ini configures sharedarea 0 only
    server: UwsgiServer = uwsgi_server(INI, env=env, options=["--processes", "2"])
    assert server.post("/accounts", {"owner": "unshared"}).status == 201
    answer = server.get("/metrics")
    assert answer.status == 503
    assert "sharedarea = 64" in answer.json()["error"], answer.body  # (2 workers + 1 mule + 1) x 16
    assert "UWSGI_ES_METRICS_SHAREDAREA" in answer.json()["error"]
