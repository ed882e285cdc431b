"""Background workers: RQ (forking and non-forking) and Celery (prefork pool), real processes and a
real redis-server. Each process that runs jobs builds exactly one application; nothing is stored twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from celery import Celery
from redis import Redis
from rq import Queue

from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.settings import Settings
from uwsgi_es.testing import lifecycle_events

from ..support.paths import PROJECT

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def open_account(url: str) -> str:
    with BankAccounts.from_settings(Settings(database_url=url)) as app:
        return str(app.open_account("worker test").id)


def check(url: str, account: str, reports: list[dict[str, int]], amounts: list[int]) -> set[int]:
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert (report["constructions"], report["subscriptions"]) == (1, 1), report
    with BankAccounts.from_settings(Settings(database_url=url)) as app:
        stored = app.get_account(UUID(account))
        events = app.records.select(UUID(account))
    assert stored.balance == sum(amounts)
    assert [r.originator_version for r in events] == list(range(1, len(amounts) + 2))
    return {r["pid"] for r in reports}


def wait_for_builds(log: Path, expected: int, timeout: float) -> set[int]:
    """The pids whose build event reached the log, once `expected` have (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        built = [int(e["pid"]) for e in lifecycle_events(log.read_text(), "build")]
        assert len(built) == len(set(built)), f"a pool process built twice: {built}"
        if len(built) >= expected or time.monotonic() > deadline:
            return set(built)
        time.sleep(0.1)


@pytest.mark.parametrize("worker_class", ["rq.Worker", "rq.SimpleWorker"], ids=["forking", "simple"])
def test_rq_jobs_build_one_application_per_process(
    redis_url: str, sqlite_url: str, worker_class: str
) -> None:
    """rq.Worker forks a work horse per job: each horse builds its own application, once.
    rq.SimpleWorker runs every job in one process: one application for all of them."""
    account = open_account(sqlite_url)
    queue = Queue("uwsgi_es", connection=Redis.from_url(redis_url))
    amounts = list(range(1, 13))
    jobs = [queue.enqueue("tests.apps.jobs.rq_deposit", account, amount) for amount in amounts]
    env = {**os.environ, "UWSGI_ES_DATABASE_URL": sqlite_url}
    command = [str(BIN / "rq"), "worker", "--burst", "-u", redis_url, "-w", worker_class, "uwsgi_es"]
    result = subprocess.run(
        command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reports = [job.return_value() for job in jobs]
    assert all(reports), result.stdout + result.stderr
    pids = check(sqlite_url, account, reports, amounts)
    assert len(pids) == (len(amounts) if worker_class == "rq.Worker" else 1)


def test_celery_prefork_pool_builds_once_per_pool_process(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    """A real `celery worker` (prefork pool of 2): worker_process_init builds once in each pool
    process; 40 tasks deposit through them; every event is stored once."""
    account = open_account(sqlite_url)
    env = {
        **os.environ,
        "UWSGI_ES_DATABASE_URL": sqlite_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        # Pool processes write their log to a file: unbuffered, so an idle one's lines are not lost.
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "celery.log"
    command = [
        str(BIN / "celery"),
        "-A",
        "tests.apps.jobs:celery_app",
        "worker",
        "--pool",
        "prefork",
        "-c",
        "2",
    ]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "info"]
    with open(log, "ab") as out:
        worker = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = Celery("client", broker=redis_url, backend=redis_url)
    try:
        amounts = list(range(1, 41))
        results = [client.send_task("tests.deposit", args=[account, amount]) for amount in amounts]
        reports: list[Any] = [r.get(timeout=90) for r in results]
        # The idle pool process may still be starting when the busy one has run every task:
        # stopping the worker now would kill it mid-build and prove nothing about it.
        builds = wait_for_builds(log, expected=2, timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    pids = check(sqlite_url, account, reports, amounts)
    assert 1 <= len(pids) <= 2
    assert pids <= builds
    assert len(builds) == 2, log.read_text()
    text = log.read_text()
    assert len(list(lifecycle_events(text, "build"))) == 2, text
