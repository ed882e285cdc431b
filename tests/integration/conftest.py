"""Integration fixtures: a migrated SQLite database and helpers to load a real uWSGI."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from uwsgi_es.testing import HttpResult, UwsgiServer

from ..conftest import PROJECT

T = TypeVar("T")
INI = PROJECT / "uwsgi.ini"


@pytest.fixture
def app_env(sqlite_url: str) -> dict[str, str]:
    """The environment a worker gets: the migrated SQLite database of this test."""
    return {"UWSGI_ES_DATABASE_URL": sqlite_url}


def fan_out(count: int, call: Callable[[int], T], concurrency: int = 32) -> list[T]:
    """Run ``call(i)`` for i in range(count), ``concurrency`` at a time; results in order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(call, range(count)))


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
