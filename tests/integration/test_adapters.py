"""The same one-application-per-process guarantee under gunicorn and in a Flask app, with real processes."""

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

import pytest

from uwsgi_es.testing import UwsgiServer, free_port, lifecycle_events

from ..support.checks import assert_one_application_per_worker, fan_out
from ..support.library import APPLICATION, migrate, sqlite_env
from ..support.paths import INI, PROJECT

pytestmark = pytest.mark.integration
StartServer = Any
GUNICORN_CONF = PROJECT / "deploy" / "gunicorn.conf.py"


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], log: Path, *extra: str, workers: int = 3
) -> Iterator[tuple[subprocess.Popen[bytes], UwsgiServer]]:
    """A real gunicorn (3 workers unless told) from deploy/gunicorn.conf.py; yields it and an HTTP client."""
    port = free_port()
    client = UwsgiServer(options=[], log_dir=log.parent, wait_for="nothing")  # used for its HTTP helpers only
    client.port = port
    full_env = {**os.environ, **env, "UWSGI_ES_HTTP": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)}
    command = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(GUNICORN_CONF), *extra]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                if client.get("/health", timeout=2).status == 200:
                    break
            time.sleep(0.05)
        yield process, client
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def reports_of_every_worker(client: UwsgiServer, workers: int) -> list[dict[str, Any]]:
    """``/worker`` reports until ``workers`` distinct pids answered (or 30 s passed)."""
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len({r["pid"] for r in reports}) < workers and time.monotonic() < deadline:
        reports += [r.json() for r in fan_out(60, lambda _: client.get("/worker"), concurrency=12)]
    return reports


@pytest.mark.parametrize("preload", [False, True], ids=["default", "preload"])
def test_gunicorn_builds_one_application_per_worker(
    app_env: dict[str, str], tmp_path: Path, preload: bool
) -> None:
    """gunicorn with 3 workers, importing the app per worker or once in the master (--preload):
    post_fork builds in each worker; every pid answers from the application it built itself."""
    log = tmp_path / "gunicorn.log"
    with gunicorn(app_env, log, *(["--preload"] if preload else [])) as (process, client):
        reports = reports_of_every_worker(client, 3)
        for report in reports:
            assert report["pid"] == report["built_in_pid"], report
            assert (report["constructions"], report["subscriptions"]) == (1, 1), report
        pids = {r["pid"] for r in reports}
        assert len(pids) == 3
        assert process.pid not in pids
        account = client.post("/accounts", {"owner": "gunicorn"}).json()["id"]
        assert client.post(f"/accounts/{account}/deposits", {"amount": 3}).json()["balance"] == 3
    text = log.read_text()
    built = [int(e["pid"]) for e in lifecycle_events(text, "build")]
    closed = [int(e["pid"]) for e in lifecycle_events(text, "close")]
    assert sorted(built) == sorted(closed) == sorted(pids), text  # built and closed, in each of 3 workers


@pytest.mark.parametrize("workers", [2, 1])
def test_gunicorn_metrics_answer_only_for_a_single_process(
    app_env: dict[str, str], tmp_path: Path, workers: int
) -> None:
    """gunicorn has no uWSGI sharedarea: with 2 workers each counts alone, so /metrics answers 503
    from every worker (naming UWSGI_ES_METRICS_DIR and the sharedarea) rather
    than one worker's numbers; with 1 worker (wsgi.multiprocess false) its numbers are the whole
    truth, and it answers 200 with them."""
    log = tmp_path / "gunicorn.log"
    with gunicorn(app_env, log, workers=workers) as (_, client):
        pids = {r["pid"] for r in reports_of_every_worker(client, workers)}
        assert len(pids) == workers
        account = client.post("/accounts", {"owner": "gunicorn"}).json()["id"]
        assert client.post(f"/accounts/{account}/deposits", {"amount": 3}).status == 200
        scrapes = fan_out(40, lambda _: client.get("/metrics"), concurrency=8)
    if workers > 1:
        assert {scrape.status for scrape in scrapes} == {503}, log.read_text()
        error = scrapes[0].json()["error"]
        assert "sharedarea = 160" in error
        assert "Set UWSGI_ES_METRICS_DIR" in error
    else:
        assert {scrape.status for scrape in scrapes} == {200}, log.read_text()
        body = scrapes[-1].body.decode()
        deposits = (
            'uwsgi_es_requests_total{method="POST",route="/accounts/<account_id>/deposits",status="200"} 1.0'
        )
        assert deposits in body


@pytest.mark.parametrize("lazy", [False, True], ids=["prefork", "lazy-apps"])
def test_flask_app_factory_under_uwsgi(
    uwsgi_server: StartServer, app_env: dict[str, str], lazy: bool
) -> None:
    """examples/flask_app.py (an app factory with the UwsgiEs extension) under real uWSGI."""
    options = ["--module", "examples.flask_app:app", "--processes", "4"] + (["--lazy-apps"] if lazy else [])
    server = uwsgi_server(INI, env=app_env, options=options)
    reports = [r.json() for r in fan_out(400, lambda _: server.get("/worker"))]
    pids = assert_one_application_per_worker(server, reports)
    assert len(pids) >= 2
    account = server.post("/accounts", {"owner": "flask"}).json()["id"]
    assert server.post(f"/accounts/{account}/deposits", {"amount": 4}).json()["balance"] == 4
    missing = server.post("/accounts/00000000-0000-4000-8000-000000000000/deposits", {"amount": 4})
    assert missing.status == 404
    assert "No BankAccount" in missing.json()["error"]
    refused = server.post(f"/accounts/{account}/withdrawals", {"amount": 5})
    assert refused.status == 409  # the JSON API's status table, shared: a domain refusal, not a 503
    assert "insufficient funds" in refused.json()["error"]
    too_big = server.post(f"/accounts/{account}/deposits", {"amount": 1, "pad": "x" * 70_000})
    assert too_big.status == 413  # refused by the extension on its declared length, before Flask


def test_flask_sqlalchemy_engine_and_session_are_shared(
    uwsgi_server: StartServer, app_env: dict[str, str]
) -> None:
    """With db=..., the store runs on Flask-SQLAlchemy's engine and db.session, built per worker."""
    create = "from examples.flask_sqlalchemy_app import app, db; app.app_context().push(); db.create_all()"
    subprocess.run([sys.executable, "-c", create], cwd=PROJECT, env={**os.environ, **app_env}, check=True)
    options = ["--module", "examples.flask_sqlalchemy_app:app", "--processes", "4"]
    server = uwsgi_server(INI, env=app_env, options=options)
    reports = [r.json() for r in fan_out(200, lambda _: server.get("/worker"))]
    assert_one_application_per_worker(server, reports)
    assert all(r["shares_engine"] for r in reports)
    account = server.post("/accounts", {"owner": "flask-sqlalchemy"}).json()["id"]
    assert server.get(f"/accounts/{account}/audit").json() == {"entries": 1}


def test_gunicorn_builds_one_library_application_per_worker(tmp_path: Path) -> None:
    """An application of the eventsourcing library under gunicorn --preload (the module, and the
    library's classes, imported in the master): post_fork builds it in each of 3 workers, which
    serve the library-written bank; each closes it at exit."""
    env = {**sqlite_env(tmp_path / "library.db"), "UWSGI_ES_APPLICATION": APPLICATION}
    migrate(env)
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, log, "--preload", "examples.eventsourcing_bank.wsgi:application") as (process, client):
        reports = reports_of_every_worker(client, 3)
        for report in reports:
            assert report["pid"] == report["built_in_pid"], report
            assert (report["application"], report["constructions"]) == ("BankAccounts", 1), report
        pids = {r["pid"] for r in reports}
        assert len(pids) == 3
        assert process.pid not in pids
        account = client.post("/accounts", {"owner": "gunicorn"}).json()["id"]
        assert client.post(f"/accounts/{account}/deposits", {"amount": 3}).json()["balance"] == 3
    text = log.read_text()
    built = [int(e["pid"]) for e in lifecycle_events(text, "build")]
    closed = [int(e["pid"]) for e in lifecycle_events(text, "close")]
    assert sorted(built) == sorted(closed) == sorted(pids), text
