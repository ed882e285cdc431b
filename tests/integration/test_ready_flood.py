"""`GET /ready` is anonymous: a flood of it must not turn into a flood of writes. A worker proves
that its store takes writes at most once per READY_RECHECK_SECONDS and answers from that proof in
between; when the store stops taking writes, /ready says so within that interval."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from uwsgi_es.testing import UwsgiServer
from uwsgi_es.web.ops import READY_LONGEST_SECONDS, READY_RECHECK_SECONDS

from ..support.load import DepositLoad
from ..support.paths import INI

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
StartServer = Any
WORKERS = 4
CLIENTS = 16
WINDOW = 4.0  # seconds each flood runs beside the deposits


class Flood:
    """``clients`` threads sending GET ``path`` back to back until the block ends."""

    def __init__(self, server: UwsgiServer, path: str, clients: int = CLIENTS) -> None:
        self.server, self.path, self.clients = server, path, clients
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Flood:
        self._running.set()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join(60)

    def _client(self) -> None:
        while self._running.is_set():
            try:
                status = self.server.get(self.path, timeout=30).status
            except OSError:
                status = 0
            with self._lock:
                self.statuses[status] += 1


def heartbeats(url: str) -> int:
    """Every heartbeat /ready wrote so far (one row per host, counting its writes)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT coalesce(sum(beats), 0) FROM uwsgi_es_heartbeat")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def deposits_per_second(load: DepositLoad, began: float, ended: float) -> float:
    done = [o for o in load.outcomes if o.status == 200 and began <= o.finished < ended]
    return len(done) / (ended - began)


def ready_statuses(server: UwsgiServer) -> set[int]:
    """/ready's status from enough requests that every worker is likely asked."""
    return {server.get("/ready", timeout=30).status for _ in range(3 * WORKERS)}


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_ready_flood_writes_a_heartbeat_at_most_once_a_second_per_worker(
    uwsgi_server: StartServer, sql_backend_env: dict[str, str], report: Any
) -> None:
    """16 clients flood /health, then /ready, beside 8 depositing clients: during the /ready flood
    each worker writes its heartbeat at most once per second (not once per call), and every
    /ready is answered 200. Deposits per second under both floods are reported, side by side."""
    url = sql_backend_env["UWSGI_ES_DATABASE_URL"]
    server = uwsgi_server(INI, env=sql_backend_env, options=["--processes", str(WORKERS)])
    load = DepositLoad(server, threads=8, one_writer_per_account=True).start()
    try:
        time.sleep(1)
        figures: dict[str, float] = {}
        for path in ("/health", "/ready"):
            before = heartbeats(url)
            with Flood(server, path) as flood:
                began = time.monotonic()
                time.sleep(WINDOW)
                ended = time.monotonic()
            written = heartbeats(url) - before
            figures[path] = deposits_per_second(load, began, ended)
            calls = sum(flood.statuses.values())
            assert set(flood.statuses) == {200}, flood.statuses
            if path == "/ready":
                ready_calls, ready_writes, seconds = calls, written, ended - began
    finally:
        load.stop()
    load.audit().check()
    # At most one proof per worker per interval, plus one each at the window's edges.
    allowed = WORKERS * (seconds / READY_RECHECK_SECONDS + 2)
    assert ready_calls > 10 * allowed, f"the flood was too thin to tell: {ready_calls} calls"
    assert ready_writes <= allowed, (
        f"{ready_writes} heartbeats for {ready_calls} /ready calls in {seconds:.1f}s"
    )
    share = 100 * figures["/ready"] / figures["/health"]
    report(
        "/ready flood vs deposits",
        sql_backend_env,
        f"8 clients depositing, 16 flooding on {WORKERS} workers: {figures['/health']:.0f} deposits/s "
        f"beside a /health flood, {figures['/ready']:.0f}/s beside a /ready flood ({share:.0f} %); "
        f"{ready_calls} /ready calls wrote {ready_writes} heartbeats in {seconds:.1f}s "
        f"(at most one per worker per {READY_RECHECK_SECONDS:g} s)",
    )


def test_ready_fails_within_the_recheck_interval_when_writes_stop(
    uwsgi_server: StartServer, sqlite_url: str
) -> None:
    """Another process holds the SQLite writers' lock (writes wait, then 503 "busy"): once the
    re-check interval has passed, /ready answers 503 "busy" on every worker, although the checks
    that passed just before the lock are still fresh when it is taken; released, 200 again."""
    env = {"UWSGI_ES_DATABASE_URL": sqlite_url, "UWSGI_ES_SQLITE_BUSY_TIMEOUT_MS": "500"}
    server = uwsgi_server(INI, env=env, options=["--processes", str(WORKERS)])
    assert ready_statuses(server) == {200}  # every worker has just checked in full
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    holder = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        time.sleep(READY_LONGEST_SECONDS + 0.2)  # a check that held the lock as it was taken ended
        answers = [server.get("/ready", timeout=30) for _ in range(3 * WORKERS)]
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    assert {answer.status for answer in answers} == {503}, [a.body for a in answers]
    assert {answer.json()["error"] for answer in answers} == {
        "the event store is busy: waiting for a lock timed out"
    }
    wait_for(lambda: ready_statuses(server) == {200}, 10)
