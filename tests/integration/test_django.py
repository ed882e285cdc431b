"""Django: served under real uWSGI (events in the Django ORM store), `manage.py check` connects to
nothing of ours, and the EventSourcedTestCase base works under `manage.py test`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from ..support.checks import assert_one_application_per_worker, fan_out
from ..support.library import APPLICATION, library_app, migrate, sqlite_env
from ..support.paths import INI, PROJECT

pytestmark = pytest.mark.integration
StartServer = Any


def manage(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "examples.django_project.manage", *arguments]
    return subprocess.run(
        command,
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_manage_py_check_opens_no_connection_of_ours(tmp_path: Path) -> None:
    """AppConfig.ready() builds nothing: `check` never connects to the store's database."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[object] = []

    def count_connections() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    stop = threading.Event()
    watcher = threading.Thread(target=count_connections)
    watcher.start()
    env = {
        "UWSGI_ES_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/app",
        "DJANGO_DATABASE_PATH": str(tmp_path / "django.sqlite3"),
    }
    try:
        result = manage("check", env=env)
    finally:
        stop.set()
        watcher.join()
        listener.close()
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert accepted == []


def test_event_sourced_test_case_under_manage_py_test(tmp_path: Path) -> None:
    result = manage(
        "test", "examples.django_project", env={"DJANGO_DATABASE_PATH": str(tmp_path / "t.sqlite3")}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 1 test" in result.stderr


@pytest.mark.parametrize("lazy", [False, True], ids=["prefork", "lazy-apps"])
def test_django_project_under_uwsgi(uwsgi_server: StartServer, tmp_path: Path, lazy: bool) -> None:
    """One application per worker, built after the fork, storing through the Django ORM."""
    env = {"DJANGO_DATABASE_PATH": str(tmp_path / "django.sqlite3"), "UWSGI_ES_STORE": "django"}
    migrated = manage("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    options = ["--module", "examples.django_project.wsgi:application", "--processes", "4"] + (
        ["--lazy-apps"] if lazy else []
    )
    server = uwsgi_server(INI, env=env, options=options)
    pids = assert_one_application_per_worker(
        server, [r.json() for r in fan_out(400, lambda _: server.get("/worker"))]
    )
    assert len(pids) >= 2
    account = server.post("/accounts", {"owner": "django"}).json()["id"]
    outcomes = fan_out(
        40, lambda _: server.post(f"/accounts/{account}/deposits", {"amount": 2}).status, concurrency=8
    )
    acknowledged = outcomes.count(200)
    assert acknowledged >= 30, outcomes
    assert "Django store" in server.log()


def test_django_project_serves_a_library_application(uwsgi_server: StartServer, tmp_path: Path) -> None:
    """The same Django views over the eventsourcing library's bank (UWSGI_ES_APPLICATION names it,
    on the library's SQLite module): one per worker, built after the fork; commands work."""
    env = {
        "DJANGO_DATABASE_PATH": str(tmp_path / "django.sqlite3"),
        "UWSGI_ES_APPLICATION": APPLICATION,
        **sqlite_env(tmp_path / "library.db"),
    }
    migrate(env)
    options = ["--module", "examples.django_project.wsgi:application", "--processes", "4"]
    server = uwsgi_server(INI, env=env, options=options)
    reports = [r.json() for r in fan_out(200, lambda _: server.get("/worker"))]
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert (report["application"], report["constructions"]) == ("BankAccounts", 1), report
        assert report["persistence"] == "eventsourcing.sqlite", report
    assert len({r["pid"] for r in reports}) >= 2
    account = server.post("/accounts", {"owner": "django library"}).json()["id"]
    outcomes = fan_out(
        20, lambda _: server.post(f"/accounts/{account}/deposits", {"amount": 2}).status, concurrency=4
    )
    assert outcomes == [200] * 20
    with library_app(env) as app:
        assert app.get_account(UUID(account)).balance == 40
