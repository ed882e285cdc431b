"""``uwsgi-es doctor INI`` run as users run it, against real uWSGI: small apps broken on purpose
(tests/apps/doctor) are each flagged with the fix and a non-zero exit; the README's example runs
verbatim and prints what the README shows; the project's own inis pass clean.

The fork and mule tests are marked ``interpreters``: ``make test`` runs them again on Python 3.12
and 3.13, where the same ini fails differently (py-call-osafterfork aborts every fork on 3.13)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import subprocess
import sys
import time
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
    """The command's exit status and its whole output (the broken apps listen on port 0, the
    project's inis on UWSGI_ES_HTTP)."""
    return run_doctor([str(ini)], env)


def run_doctor(arguments: list[str], env: dict[str, str]) -> tuple[int, str]:
    """``uwsgi-es doctor ARGUMENTS``: its exit status and its whole output."""
    environment = {**os.environ, "UWSGI_ES_HTTP": f"127.0.0.1:{free_port()}", **env}
    done = subprocess.run(
        [UWSGI_ES, "doctor", *arguments],
        cwd=PROJECT,
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
    assert "'heartbeat' running heartbeat (tests/apps/doctor/thread_at_import.py:7)" in output
    assert (
        "fix: start threads after the fork (in a post-fork hook or on first use in the worker), or if "
        in output
    )
    assert "set `py-call-uwsgi-fork-hooks = true` and run no mule" in output


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


@pytest.mark.interpreters
def test_a_function_mule_under_lazy_apps() -> None:
    """Its segfault at every respawn is quoted in the finding, not reported a second time."""
    status, output = doctor(APPS / "lazy_callable_mule.ini", {})
    assert status == 1, output
    assert problems(output) == ["a module:function mule under lazy-apps"], output
    assert "unbit/uwsgi#1746" in output
    assert "in this boot it died: mule 1 " in output
    assert "fix: give the mule a script instead" in output


def readme_example() -> tuple[str, list[str]]:
    """The doctor's example in README.md: its command line, and the output shown."""
    readme = (PROJECT / "README.md").read_text()
    block = re.search(r"```text\n\$ (uwsgi-es doctor [^\n]+)\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "README.md shows no `$ uwsgi-es doctor ...` example"
    return block[1], block[2].splitlines()


def test_the_readme_example_runs_verbatim_in_seconds() -> None:
    """From the project's root, with nothing set but what a user has, in a few seconds (the boot
    time aside, the output is the README's), leaving no file behind."""
    command, shown = readme_example()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DOCTOR_APP_", "UWSGI_ES_"))}
    environment["PATH"] = f"{Path(UWSGI_ES).parent}{os.pathsep}{environment.get('PATH', '')}"
    before = set(APPS.iterdir())
    started = time.monotonic()
    done = subprocess.run(
        shlex.split(command),
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    boot_time = re.compile(r"in \d+\.\ds")
    printed = [boot_time.sub("in _s", line) for line in (done.stdout + done.stderr).splitlines()]
    assert printed == [boot_time.sub("in _s", line) for line in shown], done.stdout + done.stderr
    assert done.returncode == 1
    assert elapsed < 10, f"the README's example took {elapsed:.1f}s"
    assert set(APPS.iterdir()) == before


@pytest.mark.interpreters
def test_py_call_osafterfork_is_fatal_from_python_3_13() -> None:
    """On 3.13 every worker aborts at its fork: the doctor says why, though nothing booted. On
    older Pythons the same ini works, and the doctor says it will not from 3.13."""
    status, output = doctor(APPS / "osafterfork.ini", {})
    if sys.version_info >= (3, 13):
        version = ".".join(map(str, sys.version_info[:3]))
        assert status == 2, output
        assert problems(output) == [
            "only 0 of 2 workers started accepting requests",
            f"py-call-osafterfork aborts every worker and mule on Python {version}",
            "a uWSGI process crashed during the boot",
        ], output
        assert "the log says 'Fatal Python error: " in output
        assert "--- the end of uWSGI's log ---" in output
    else:
        assert status == 1, output
        assert problems(output) == ["py-call-osafterfork aborts every worker and mule from Python 3.13"], (
            output
        )
    assert "fix: remove `py-call-osafterfork`: uwsgi_es needs no fork option" in output


@pytest.mark.interpreters
def test_fork_hooks_beside_a_mule() -> None:
    """The mule segfaults at every respawn while the workers serve: the 3 s the doctor watches
    the mules show it in the log."""
    status, output = doctor(APPS / "fork_hooks_mule.ini", {})
    assert status == 1, output
    assert problems(output) == ["py-call-uwsgi-fork-hooks with a mule: the mule crashes at every respawn"], (
        output
    )
    assert f"`mule = {APPS / 'idle_mule.py'}`; in this boot it died: mule 1 " in output
    assert "got Segmentation Fault" in output
    assert "fix: drop `py-call-uwsgi-fork-hooks`" in output
    assert "`uwsgi-es project NAME`" in output


@pytest.mark.interpreters
def test_mules_that_cannot_start() -> None:
    """A script that is not there, a module that is not on the master's path: each named by its
    line, found by the master before any mule runs."""
    status, output = doctor(APPS / "missing_mules.ini", {})
    assert status == 1, output
    assert problems(output) == [
        f"a mule that cannot start: `mule = {APPS / 'no_such_mule.py'}` (mule 1)",
        "a mule that cannot start: `mule = no_such_package.projections:run` (mule 2)",
    ], output
    assert f"no file {APPS / 'no_such_mule.py'}" in output
    assert f"no module no_such_package.projections on the master's sys.path (from {APPS})" in output
    assert "fix: correct the path" in output
    assert "fix: make the module importable" in output


@pytest.mark.interpreters
def test_a_mule_that_dies_at_every_start() -> None:
    status, output = doctor(APPS / "failing_mule.ini", {})
    assert status == 1, output
    assert problems(output) == [f"a mule died during the boot: `mule = {APPS / 'failing_mule.py'}` (mule 1)"]
    assert "crippled...trying respawn..." in output
    assert "the log's first Python exception: 'RuntimeError: DOCTOR_APP_QUEUE is not set'" in output


def test_an_environment_variable_left_unset() -> None:
    assert "DOCTOR_APP_GREETING" not in os.environ
    status, output = doctor(APPS / "unset_variable.ini", {})
    assert status == 1, output
    assert problems(output) == ["the environment variable DOCTOR_APP_GREETING is not set"], output
    assert "uWSGI kept the text $(DOCTOR_APP_GREETING) in `env = GREETING=$(DOCTOR_APP_GREETING)`" in output
    assert "fix: export DOCTOR_APP_GREETING=... or remove it from the ini" in output


@pytest.mark.interpreters
def test_workers_that_crash_never_boot_and_still_get_findings() -> None:
    """Every worker segfaults after its fork: the doctor gives up at once (not at its timeout),
    quotes the crash and shows the end of the log."""
    started = time.monotonic()
    status, output = doctor(APPS / "segfault_after_fork.ini", {})
    assert status == 2, output
    assert time.monotonic() - started < 15
    assert problems(output) == [
        "only 0 of 2 workers started accepting requests",
        "a uWSGI process crashed during the boot",
    ], output
    assert re.search(r"the log says '!!! uWSGI process \d+ got Segmentation Fault !!!'", output), output
    assert "--- the end of uWSGI's log ---" in output
    assert "2 problem(s)" in output


def test_workers_hung_by_a_thread_of_the_master() -> None:
    """A thread of the master holds the GIL as uWSGI forks: the workers forked then hang. The
    doctor gives up on them 10 s after the first spawn (it used to wait out its 60 s timeout, then
    10 s more for the hung workers to stop, and print 'booted uWSGI in 70.1s')."""
    started = time.monotonic()
    status, output = doctor(APPS / "gil_at_fork.ini", {})
    assert status == 2, output
    assert time.monotonic() - started < 30, output
    hung, threads = problems(output)
    assert re.fullmatch(r"only [0-5] of 6 workers started accepting requests", hung), output
    assert re.fullmatch(r"1 thread\(s\) (running|started) in the master", threads), output
    assert "the others hang before their first request: a thread of the master held the GIL" in output
    assert "'spinner' running spin (tests/apps/doctor/gil_at_fork.py:10)" in output


def test_the_address_is_in_use() -> None:
    """uWSGI exits before Python starts: the log alone says why."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        status, output = doctor(INI, {"UWSGI_ES_HTTP": address})
    assert status == 2, output
    assert "uWSGI stopped by itself (exit code 1) before its workers accepted requests" in output
    assert problems(output) == [f"the address {address} is in use"], output
    assert "fix: stop what listens there, or set UWSGI_ES_HTTP=127.0.0.1:<a free port>" in output


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


@pytest.mark.pgbouncer
def test_behind_pgbouncer_the_budget_is_the_poolers(pgbouncer_url: str) -> None:
    """The same pools through PgBouncer: the server's max_connections bounds PgBouncer's pools,
    not these, so it is no problem; the doctor names the client connections PgBouncer must take."""
    env = {"UWSGI_ES_DATABASE_URL": pgbouncer_url, "UWSGI_ES_POOL_SIZE": "100"}
    status, output = doctor(APPS / "six_workers.ini", env)
    assert (status, problems(output)) == (0, []), output
    assert (
        "ok: PostgreSQL is reached through a connection pooler (PgBouncer): 386 client connections" in output
    )
    assert "keep PgBouncer's max_client_conn at 386 or more" in output


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


def uwsgi_processes_reading(marker: str) -> list[int]:
    """The pids of processes whose command line names ``marker`` (a test's own ini)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.mark.parametrize("seen", [True, False], ids=["refused", "detached"])
def test_an_ini_that_daemonizes_is_refused_and_nothing_is_left_running(tmp_path: Path, seen: bool) -> None:
    """`daemonize = FILE` in an ini the ini includes: the doctor refuses before anything starts,
    naming the line and the fix. Set where it cannot be read before the boot (an ini uWSGI loads
    from its environment, UWSGI_INI): the master detaches, and the doctor stops it and its workers,
    and says why. Either way no uWSGI process is left, and the exit status is 2."""
    daemon_log = tmp_path / "daemon.log"
    daemonizing = tmp_path / "daemonize.ini"
    daemonizing.write_text(f"[uwsgi]\ndaemonize = {daemon_log}\n")
    ini = tmp_path / "daemonizing.ini"
    lines = ["[uwsgi]", f"ini = {APPS}/base.ini", f"chdir = {APPS}", "module = hello:application"]
    ini.write_text("\n".join([*lines, "ini = %ddaemonize.ini"] if seen else lines) + "\n")
    status, output = doctor(ini, {} if seen else {"UWSGI_INI": str(daemonizing)})
    assert status == 2, output
    assert f"{ini} daemonizes uWSGI" in output
    assert "Run the doctor on a copy of the ini without that line" in output
    if seen:
        assert f"`daemonize = {daemon_log}` in {tmp_path / 'daemonize.ini'}" in output
        assert not daemon_log.exists(), "uWSGI was started"
    else:
        assert "its master detached from the doctor" in output
        assert daemon_log.exists()
    time.sleep(0.5)  # a worker's exit after its master's
    assert uwsgi_processes_reading(str(ini)) == []
