"""The one-application-per-process guarantee where uWSGI users move to: uvicorn --workers, granian
(its ASGI and WSGI interfaces) and gunicorn's ASGI worker, each with 4 real workers, on SQLite and
the real PostgreSQL. Every worker builds its own application once, after the fork or spawn; a
worker that dies is replaced by one that builds again; an application its parent built by mistake
is forgotten, said, and built again in each worker; the bank invariant holds with concurrent
writers, and SIGKILLed workers under load lose nothing acknowledged."""

from __future__ import annotations

import http.client
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.testing import lifecycle_events

from ..support.asgi_servers import SERVERS, WORKERS, Served, serving
from ..support.checks import fan_out, move_money_concurrently
from ..support.load import DepositLoad

pytestmark = pytest.mark.integration
ASGI_SERVERS = [s for s in SERVERS if s != "granian wsgi"]


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"UWSGI_ES_DATABASE_URL": request.getfixturevalue(f"{request.param}_url")}


def worker_reports(served: Served, workers: int = WORKERS, timeout: float = 30) -> list[dict[str, Any]]:
    """``/worker`` reports until ``workers`` distinct pids answered (or ``timeout`` passed)."""
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout

    def report(_: int) -> dict[str, Any] | None:
        try:
            answer = served.client.get("/worker", timeout=5)
        except (OSError, http.client.HTTPException):  # a connection the killed worker held
            return None
        return answer.json() if answer.status == 200 else None

    while len({r["pid"] for r in reports}) < workers and time.monotonic() < deadline:
        reports += [r for r in fan_out(40, report, concurrency=8) if r is not None]
    return reports


def assert_built_in_each(served: Served, reports: list[dict[str, Any]]) -> set[int]:
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert (report["constructions"], report["subscriptions"]) == (1, 1), report
    pids = {r["pid"] for r in reports}
    assert served.pid not in pids, "the parent served a request"
    return pids


@pytest.mark.parametrize("server", SERVERS)
def test_each_worker_builds_one_application_after_the_fork(
    server: str, store_env: dict[str, str], tmp_path: Path
) -> None:
    """4 workers: 4 pids answer, each from the application it built itself, once; a deposit is
    read back; the log has one build per worker (ASGI: in its lifespan, and one close each at
    SIGTERM)."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        pids = assert_built_in_each(served, worker_reports(served))
        assert len(pids) == WORKERS, pids
        account = served.client.post("/accounts", {"owner": server}).json()["id"]
        deposited = served.client.post(f"/accounts/{account}/deposits", {"amount": 3})
        assert deposited.json()["balance"] == 3, deposited.body
        assert served.client.get(f"/accounts/{account}").json()["balance"] == 3
    log = served.text()
    built = sorted(int(e["pid"]) for e in lifecycle_events(log, "build"))
    assert built == sorted(pids), log[-3000:]
    if server in ASGI_SERVERS:
        assert sorted(int(e["pid"]) for e in lifecycle_events(log, "close")) == built, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("server", SERVERS)
def test_a_killed_worker_is_replaced_by_one_that_builds_again(
    server: str, app_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL one worker: the server starts another, which answers from an application it built
    itself, once; the others keep theirs."""
    with serving(server, app_env, tmp_path / "server.log") as served:
        before = assert_built_in_each(served, worker_reports(served))
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            reports = worker_reports(served, timeout=5)
            now = assert_built_in_each(served, reports)
            if now - before:
                break
            assert time.monotonic() < deadline, f"no new worker answered: {now}; {served.text()[-2000:]}"
        assert victim not in now
        assert len(now) == WORKERS, now


@pytest.mark.parametrize("server", ["gunicorn asgi"])
def test_an_application_the_parent_built_is_forgotten_and_built_in_each_worker(
    server: str, app_env: dict[str, str], tmp_path: Path
) -> None:
    """gunicorn --preload with a module that builds at import (in the arbiter, by mistake): each
    worker logs forgot_inherited naming the arbiter's pid, and answers from its own build."""
    target = "tests.apps.asgi_built_at_import:application"
    with serving(server, app_env, tmp_path / "server.log", "--preload", target=target) as served:
        pids = assert_built_in_each(served, worker_reports(served))
    forgot = list(lifecycle_events(served.text(), "forgot_inherited"))
    assert {int(e["built_in_pid"]) for e in forgot} == {served.pid}, served.text()[-3000:]
    assert {int(e["pid"]) for e in forgot} == pids


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_the_bank_invariant_holds_with_concurrent_writers(
    server: str, store_env: dict[str, str], tmp_path: Path
) -> None:
    """600 deposits and withdrawals, 32 at once over 4 workers: each acknowledged once, versions
    1..n, no balance below zero, each balance the sum of what was acknowledged."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        move_money_concurrently(served.client)
    assert "Traceback" not in served.text(), served.text()[-3000:]


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_sigkilled_workers_under_load_lose_nothing_acknowledged(
    server: str, store_env: dict[str, str], tmp_path: Path
) -> None:
    """8 clients depositing while a worker is SIGKILLed every second for 5 s: every acknowledged
    deposit is stored once, nothing refused is stored, versions stay contiguous."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        load = DepositLoad(served.client).start()
        try:
            for _ in range(5):
                time.sleep(1)
                pids = {r["pid"] for r in worker_reports(served, workers=1, timeout=5)}
                os.kill(min(pids), signal.SIGKILL)
            time.sleep(1)
        finally:
            load.stop()
        audit = load.audit()
    audit.check()


@pytest.mark.parametrize("server", SERVERS)
def test_a_graceful_reload_under_load_fails_no_request(
    server: str, store_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGHUP to the server (each one's graceful reload: new workers, then the old ones retired)
    with 8 clients depositing: every worker is replaced by one that built its own application,
    no deposit fails, and the audit finds each acknowledged deposit stored once."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        before = assert_built_in_each(served, worker_reports(served))
        load = DepositLoad(served.client).start()
        try:
            time.sleep(1)
            os.kill(served.pid, signal.SIGHUP)
            deadline = time.monotonic() + 60
            while (
                not (after := assert_built_in_each(served, worker_reports(served, timeout=5))).isdisjoint(
                    before
                )
                or len(after) < WORKERS
            ):
                assert time.monotonic() < deadline, f"not every worker was replaced: {before} -> {after}"
            time.sleep(1)
        finally:
            load.stop()
        audit = load.audit()
    audit.check()
    assert audit.failed == 0, audit.line()


DEPOSITS = 'uwsgi_es_requests_total{method="POST",route="/accounts/<account_id>/deposits",status="200"}'


def deposits_counted(served: Served) -> set[float]:
    """The deposits /metrics counts, as each of 12 scrapes (spread over the workers) says."""
    counted = set()
    for scrape in fan_out(12, lambda _: served.client.get("/metrics"), concurrency=4):
        assert scrape.status == 200, (scrape.body, served.text()[-4000:])
        lines = [line for line in scrape.body.decode().splitlines() if line.startswith(DEPOSITS)]
        assert len(lines) == 1, scrape.body.decode()[:3000]
        counted.add(float(lines[0].split()[-1]))
    return counted


@pytest.mark.parametrize("server", SERVERS)
def test_metrics_add_up_every_worker_even_a_killed_one(
    server: str, app_env: dict[str, str], tmp_path: Path
) -> None:
    """UWSGI_ES_METRICS_DIR set: 40 deposits over 4 workers, every scrape counts 40; a worker
    SIGKILLed and replaced, 20 more: every scrape counts 60 (the dead worker's counts kept, its
    file merged by its replacement); a second run in the same directory starts from 0."""
    env = {**app_env, "UWSGI_ES_METRICS_DIR": str(tmp_path / "metrics")}
    with serving(server, env, tmp_path / "server.log") as served:
        account = served.client.post("/accounts", {"owner": "counted"}).json()["id"]
        deposit = lambda _: served.client.post(f"/accounts/{account}/deposits", {"amount": 1}).status  # noqa: E731
        assert set(fan_out(40, deposit, concurrency=8)) == {200}
        assert deposits_counted(served) == {40.0}
        before = assert_built_in_each(served, worker_reports(served))
        os.kill(min(before), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (assert_built_in_each(served, worker_reports(served, timeout=5)) - before):
            assert time.monotonic() < deadline, "no worker replaced the killed one"
        assert set(fan_out(20, deposit, concurrency=8)) == {200}
        assert deposits_counted(served) == {60.0}
    with serving(server, env, tmp_path / "again.log") as served:
        account = served.client.post("/accounts", {"owner": "again"}).json()["id"]
        assert served.client.post(f"/accounts/{account}/deposits", {"amount": 1}).status == 200
        assert deposits_counted(served) == {1.0}
