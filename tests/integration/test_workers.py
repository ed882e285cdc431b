"""Background workers: RQ (forking and non-forking) and Celery (prefork pool), real processes and a
real redis-server. Each process that runs jobs builds exactly one application; nothing is stored twice."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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

from ..support.library import APPLICATION, library_app, migrate, sqlite_env
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


@contextlib.contextmanager
def celery_worker(app: str, env: dict[str, str], log: Path) -> Iterator[Celery]:
    """A real `celery worker` (prefork pool of 2) for the Celery app ``app``; yields a client."""
    full_env = {
        **os.environ,
        **env,
        "CELERY_BROKER_URL": env["REDIS_URL"],
        "CELERY_RESULT_BACKEND": env["REDIS_URL"],
        # Pool processes write their log to a file: unbuffered, so an idle one's lines are not lost.
        "PYTHONUNBUFFERED": "1",
    }
    command = [str(BIN / "celery"), "-A", app, "worker", "--pool", "prefork", "-c", "2"]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "info"]
    with open(log, "ab") as out:
        worker = subprocess.Popen(
            command, cwd=PROJECT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Celery("client", broker=env["REDIS_URL"], backend=env["REDIS_URL"])
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def test_celery_prefork_pool_builds_once_per_pool_process(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    """A real `celery worker` (prefork pool of 2): worker_process_init builds once in each pool
    process; 40 tasks deposit through them; every event is stored once."""
    account = open_account(sqlite_url)
    log = tmp_path / "celery.log"
    env = {"UWSGI_ES_DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}
    amounts = list(range(1, 41))
    with celery_worker("tests.apps.jobs:celery_app", env, log) as client:
        results = [client.send_task("tests.deposit", args=[account, amount]) for amount in amounts]
        reports: list[Any] = [r.get(timeout=90) for r in results]
        # The idle pool process may still be starting when the busy one has run every task:
        # stopping the worker now would kill it mid-build and prove nothing about it.
        builds = wait_for_builds(log, expected=2, timeout=60)
    pids = check(sqlite_url, account, reports, amounts)
    assert 1 <= len(pids) <= 2
    assert pids <= builds
    assert len(builds) == 2, log.read_text()
    text = log.read_text()
    assert len(list(lifecycle_events(text, "build"))) == 2, text
    closed = {int(e["pid"]) for e in lifecycle_events(text, "close")}
    assert closed == builds, text


def open_library_account(env: dict[str, str]) -> str:
    with library_app(env) as app:
        return str(app.open_account("library worker test").id)


def check_library(
    env: dict[str, str], account: str, reports: list[dict[str, Any]], amounts: list[int]
) -> set[int]:
    """Each report came from a process that built its library application itself, once; the
    account holds every deposit once, versions 1..n."""
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert report["constructions"] == 1, report
        assert report["application"] == "BankAccounts", report
    with library_app(env) as app:
        assert app.get_account(UUID(account)).balance == sum(amounts)
        versions = [e.originator_version for e in app.events.get(UUID(account))]
    assert versions == list(range(1, len(amounts) + 2))
    return {r["pid"] for r in reports}


def test_library_application_under_rq_and_celery(redis_url: str, tmp_path: Path) -> None:
    """The eventsourcing library's application, on its SQLite module: each RQ work horse (one per
    job) builds its own with the lazy getter; each Celery pool process builds one at
    worker_process_init and closes it at exit; every deposit is stored once."""
    env = {**sqlite_env(tmp_path / "library.db"), "UWSGI_ES_APPLICATION": APPLICATION}
    migrate(env)
    account = open_library_account(env)
    queue = Queue("uwsgi_es_library", connection=Redis.from_url(redis_url))
    rq_amounts = list(range(1, 7))
    jobs = [queue.enqueue("tests.apps.library_jobs.rq_deposit", account, a) for a in rq_amounts]
    command = [str(BIN / "rq"), "worker", "--burst", "-u", redis_url, "-w", "rq.Worker", "uwsgi_es_library"]
    result = subprocess.run(
        command,
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rq_reports = [job.return_value() for job in jobs]
    assert all(rq_reports), result.stdout + result.stderr
    assert len(check_library(env, account, rq_reports, rq_amounts)) == len(rq_amounts)

    log = tmp_path / "celery.log"
    celery_amounts = list(range(1, 21))
    with celery_worker("tests.apps.library_jobs:celery_app", {**env, "REDIS_URL": redis_url}, log) as client:
        results = [client.send_task("tests.library_deposit", args=[account, a]) for a in celery_amounts]
        reports: list[Any] = [r.get(timeout=90) for r in results]
        builds = wait_for_builds(log, expected=2, timeout=60)
    pids = check_library(env, account, reports, rq_amounts + celery_amounts)
    assert pids <= builds
    assert len(builds) == 2, log.read_text()
    text = log.read_text()
    assert {e["application"] for e in lifecycle_events(text, "build")} == {"BankAccounts"}
    assert {int(e["pid"]) for e in lifecycle_events(text, "close")} == builds, text
