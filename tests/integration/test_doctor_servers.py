"""``uwsgi-es doctor -- COMMAND`` against the servers uWSGI users move to, run for real with the
README's command lines: the launches as shipped pass clean (each worker built its own application);
gunicorn's ``--preload`` with a module that builds at import is flagged (the application and its
connections made in the parent, a PostgreSQL connection then held by every worker); a WSGI
interface that builds on first use is said to be checked in its parent only; a command that
cannot run is refused, naming why."""

from __future__ import annotations

import sys

import pytest

from uwsgi_es.testing import free_port
from uwsgi_es.testing.asgi_servers import server_command

from ..support.paths import PROJECT
from .test_doctor import problems, run_doctor

pytestmark = pytest.mark.integration
BUILT_AT_IMPORT = "tests.apps.asgi_built_at_import:application"


def doctor(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    return run_doctor(["--", *command], env)


@pytest.mark.parametrize("server", ["uvicorn", "granian asgi", "gunicorn asgi"])
def test_each_server_as_the_readme_launches_it_passes_clean(server: str, app_env: dict[str, str]) -> None:
    status, output = doctor(server_command(server, free_port(), workers=2), app_env)
    assert status == 0, output
    assert "ok: every worker built its own application" in output
    assert "ok: no connection, SQLite database or application made in the parent" in output
    assert "ok: no worker shares a connection with its parent" in output
    assert output.rstrip().endswith("no problems found"), output


def test_an_application_built_at_import_under_preload_is_flagged(app_env: dict[str, str]) -> None:
    command = server_command("gunicorn asgi", free_port(), BUILT_AT_IMPORT, workers=2, extra=["--preload"])
    status, output = doctor(command, app_env)
    assert status == 1, output
    assert problems(output) == [
        "a SQLite database was opened in the parent at import",
        "an application (BankAccounts) was built in the parent at import",
    ], output
    assert "tests/apps/asgi_built_at_import.py:12" in output
    assert "fix: build it in each worker: serve uwsgi_es.servers.asgi.asgi(...)" in output
    assert "ok: every worker built its own application" in output  # each forgot the parent's and built


@pytest.mark.postgres
def test_a_postgresql_connection_of_the_parent_is_found_in_every_worker(postgres_url: str) -> None:
    """The parent's application holds a pooled connection at the fork: each worker forgets the
    application (never closing the parent's socket), so the socket stays open in all of them."""
    command = server_command("gunicorn asgi", free_port(), BUILT_AT_IMPORT, workers=2, extra=["--preload"])
    status, output = doctor(command, {"UWSGI_ES_DATABASE_URL": postgres_url})
    assert status == 1, output
    port = postgres_url.rsplit(":", 1)[1].split("/", 1)[0]
    assert f"a connection to 127.0.0.1:{port} opened in the parent is shared by 2 workers" in problems(output)
    assert "an application (BankAccounts) was built in the parent at import" in problems(output)


def test_a_wsgi_interface_is_checked_in_its_parent(app_env: dict[str, str]) -> None:
    status, output = doctor(server_command("granian wsgi", free_port(), workers=2), app_env)
    assert status == 0, output
    assert "ok: no worker built an application while starting: they build on their first request" in output
    assert "ok: no connection, SQLite database or application made in the parent" in output


def test_a_command_that_cannot_run_is_refused(app_env: dict[str, str]) -> None:
    status, output = doctor(["no-such-server", "--workers", "2", "app:application"], app_env)
    assert status == 2, output
    assert "no program 'no-such-server' on PATH" in output


def test_an_application_built_in_granians_on_startup_is_flagged(app_env: dict[str, str]) -> None:
    script = PROJECT / "tests" / "apps" / "granian_on_startup.py"
    status, output = doctor([sys.executable, str(script), str(free_port()), "--workers", "2"], app_env)
    assert status == 1, output
    assert problems(output) == [
        "a SQLite database was opened in the parent before the fork",
        "an application (BankAccounts) was built in the parent before the fork",
    ], output
    assert "tests/apps/granian_on_startup.py:20" in output
    assert "never in granian's on_startup" in output


@pytest.mark.postgres
def test_the_pools_are_budgeted_with_the_asgi_threads(postgres_url: str) -> None:
    """Each worker serves UWSGI_ES_ASGI_THREADS requests at once, each holding a pooled connection:
    the budget is workers x min(pool size + overflow, threads)."""
    env = {"UWSGI_ES_DATABASE_URL": postgres_url, "UWSGI_ES_ASGI_THREADS": "3"}
    status, output = doctor(server_command("uvicorn", free_port(), workers=2), env)
    assert status == 0, output
    assert "ok: PostgreSQL connections fit: 6 of " in output, output
    assert (
        "2 workers x 3 (min of UWSGI_ES_POOL_SIZE + UWSGI_ES_MAX_OVERFLOW = 15 and 3 requests at once)"
        in output
    )
