"""``uwsgi-es doctor INI`` run as users run it, against real uWSGI: small apps broken on purpose
(tests/apps/doctor) are each flagged with the fix and a non-zero exit; the project's
own inis pass clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from uwsgi_es.testing import PostgresServer, free_port
from uwsgi_es.testing.postgres import ExistingPostgres

from ..support.paths import INI, PROJECT
from .test_eventsourcing import postgres_env

pytestmark = pytest.mark.integration

APPS = PROJECT / "tests" / "apps" / "doctor"
UWSGI_ES = str(Path(sys.executable).parent / "uwsgi-es")


def doctor(ini: Path, env: dict[str, str]) -> tuple[int, str]:
    """The command's exit status and its whole output."""
    address = f"127.0.0.1:{free_port()}"
    environment = {**os.environ, "DOCTOR_APP_HTTP": address, "UWSGI_ES_HTTP": address, **env}
    done = subprocess.run(
        [UWSGI_ES, "doctor", str(ini)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def problems(output: str) -> list[str]:
    return [line.removeprefix("PROBLEM: ") for line in output.splitlines() if line.startswith("PROBLEM: ")]


def test_a_psycopg_connection_opened_at_import_is_shared_by_the_workers(postgres_url: str) -> None:
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    port = make_url(postgres_url).port
    status, output = doctor(APPS / "psycopg_at_import.ini", {"DOCTOR_APP_DSN": dsn})
    assert status == 1, output
    assert problems(output) == [
        f"a connection to 127.0.0.1:{port} opened in the master is shared by 2 workers"
    ], output
    assert "workers 1, 2" in output
    assert "opened by a C library" in output
    assert "fix: open it after the fork" in output
    assert "1 problem(s)" in output


def test_a_thread_started_at_import_is_named_with_its_function() -> None:
    status, output = doctor(APPS / "thread_at_import.ini", {})
    assert status == 1, output
    assert problems(output) == ["1 thread(s) running in the master"], output
    assert f"'heartbeat' running heartbeat ({APPS / 'thread_at_import.py'}:7)" in output
    assert "fix: start threads after the fork" in output


def test_wsgi_file_without_die_on_term_or_need_app() -> None:
    status, output = doctor(APPS / "wsgi_file.ini", {})
    assert status == 1, output
    assert problems(output) == [
        "the application is loaded with wsgi-file",
        "SIGTERM reloads uWSGI instead of stopping it",
        "uWSGI serves without an application when the import fails",
    ], output
    for fix in (
        "fix: module = package.module:application",
        "fix: die-on-term = true",
        "fix: need-app = true",
    ):
        assert fix in output


def test_a_function_mule_under_lazy_apps() -> None:
    status, output = doctor(APPS / "lazy_callable_mule.ini", {})
    assert status == 1, output
    assert problems(output) == ["a module:function mule under lazy-apps"], output
    assert "unbit/uwsgi#1746" in output
    assert "fix: give the mule a script instead" in output


def test_pools_that_cannot_fit_the_server(
    postgres_url: str, postgres: PostgresServer | ExistingPostgres
) -> None:
    """uwsgi.ini (gevent 64) with 6 workers and pools of 100: up to 6 x 64 + 2 connections,
    against the test server's max_connections of 300."""
    secret = "doctor-s3cret"  # noqa: S105 (the server trusts local clients: a password nobody checks)
    url = make_url(postgres_url).set(password=secret).render_as_string(hide_password=False)
    env = {"UWSGI_ES_DATABASE_URL": url, "UWSGI_ES_POOL_SIZE": "100"}
    status, output = doctor(APPS / "six_workers.ini", env)
    assert status == 1, output
    found = problems(output)
    assert len(found) == 1, output
    assert found[0].startswith("the pools can open 386 PostgreSQL connections, the server has "), output
    assert (
        "6 workers x 64 (min of UWSGI_ES_POOL_SIZE + UWSGI_ES_MAX_OVERFLOW = 110 and 64 requests at once)"
        in output
    )
    assert "max_connections 300" in output
    assert "fix: lower UWSGI_ES_POOL_SIZE + UWSGI_ES_MAX_OVERFLOW or processes" in output
    assert secret not in output


def test_the_project_inis_pass_clean(
    sqlite_url: str,
    postgres_url: str,
    postgres: PostgresServer | ExistingPostgres,
    cassandra_env: dict[str, str],
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    cases = [
        (INI, {"UWSGI_ES_DATABASE_URL": sqlite_url}),
        (PROJECT / "deploy" / "uwsgi-postgres.ini", {"UWSGI_ES_DATABASE_URL": postgres_url}),
        (
            PROJECT / "deploy" / "uwsgi-nginx.ini",
            {"UWSGI_ES_DATABASE_URL": sqlite_url, "RUNTIME_DIRECTORY": str(runtime)},
        ),
        (PROJECT / "deploy" / "uwsgi-cassandra.ini", cassandra_env),
        (PROJECT / "deploy" / "uwsgi-eventsourcing.ini", postgres_env(postgres)),
    ]
    for ini, env in cases:
        status, output = doctor(ini, env)
        assert (status, problems(output)) == (0, []), output
        assert "no problems found" in output
        if "postgres" in ini.name or "eventsourcing" in ini.name:
            assert "ok: PostgreSQL connections fit: " in output, output
