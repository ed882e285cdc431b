"""The ini files we ship, exactly as shipped, under real uWSGI, where users run them.

- Every one boots with the servers it needs and its mules, and runs for 10 s more, in prefork and
  lazy-apps mode, and its log holds no segmentation fault, fatal Python error, crippled process,
  respawn or traceback (a serving worker says nothing about a crash-looping mule). Marked
  ``interpreters``: `make test` runs it on Python 3.12 and 3.13 too.
- A copy of uwsgi.ini in another directory, migrated with the README's own command, serves the
  example and its read side there, with nothing else set.
- The ini's module and UWSGI_ES_APPLICATION name the same application, or uWSGI stops at start
  with one line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uwsgi_es.testing import UwsgiServer
from uwsgi_es.testing.cassandra import CassandraNode
from uwsgi_es.testing.postgres import ExistingPostgres, PostgresServer

from ..support.library import migrate as migrate_library
from ..support.library import sqlite_env as library_sqlite_env
from ..support.logs import crashes
from ..support.paths import CASSANDRA_INI, INI, POSTGRES_INI, PROJECT

pytestmark = pytest.mark.integration

DEPLOY = PROJECT / "deploy"
UWSGI_ES = str(Path(sys.executable).parent / "uwsgi-es")
WATCH_SECONDS = 10
# Another application named like the example's: the eventsourcing library's bank.
LIBRARY_BANK = "examples.eventsourcing_bank.application:BankAccounts"


def migrate(ini: Path, env: dict[str, str], cwd: Path) -> str:
    """`uwsgi-es migrate --ini INI`, as the README and the inis' headers say."""
    done = subprocess.run(
        [UWSGI_ES, "migrate", "--ini", str(ini)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_ES_")}


def wait_for_log(server: UwsgiServer, pattern: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, server.log())) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} x {pattern!r} not in the log after {timeout}s:\n{server.log()}")


@pytest.mark.interpreters
@pytest.mark.parametrize("mode", ["prefork", "lazy-apps"])
def test_every_shipped_ini_runs_with_a_clean_log(
    mode: str,
    tmp_path: Path,
    postgres: PostgresServer | ExistingPostgres,
    cassandra: CassandraNode,
) -> None:
    """uwsgi.ini and every deploy/*.ini, each with its servers, all running for 10 s after boot."""
    options = ["--lazy-apps"] if mode == "lazy-apps" else []
    env = base_env()
    sqlite = {"UWSGI_ES_DATABASE_URL": f"sqlite:///{tmp_path / 'sqlite.db'}"}
    migrate(INI, {**env, **sqlite}, tmp_path)
    postgres_url = {"UWSGI_ES_DATABASE_URL": postgres.create_database(f"shipped_{mode.replace('-', '_')}")}
    migrate(POSTGRES_INI, {**env, **postgres_url}, tmp_path)
    cassandra_env = {
        "UWSGI_ES_CASSANDRA_PORT": str(cassandra.native_port),
        "UWSGI_ES_CASSANDRA_KEYSPACE": f"shipped_{mode.replace('-', '_')}",
    }
    migrate(CASSANDRA_INI, {**env, **cassandra_env}, tmp_path)
    library = library_sqlite_env(tmp_path / "library.db")
    migrate_library(library)
    runtime = tmp_path / "run"
    runtime.mkdir()
    # (ini, environment, mules expected to run a projection, whether it serves HTTP)
    cases = {
        "uwsgi.ini": (INI, sqlite, 1, True),
        "uwsgi-postgres.ini": (POSTGRES_INI, postgres_url, 1, True),
        "uwsgi-cassandra.ini": (CASSANDRA_INI, cassandra_env, 0, True),
        "uwsgi-eventsourcing.ini": (DEPLOY / "uwsgi-eventsourcing.ini", library, 0, True),
        "uwsgi-nginx.ini": (
            DEPLOY / "uwsgi-nginx.ini",
            {**sqlite, "RUNTIME_DIRECTORY": str(runtime)},
            1,
            False,
        ),
    }
    servers = {
        name: UwsgiServer(
            ini,
            env=extra,
            options=options,
            log_dir=tmp_path / name,
            wait_for="ready" if http else "nothing",
            add_http=False,  # each reads UWSGI_ES_HTTP (uwsgi.ini [serving]), or has no HTTP
            startup_timeout=120,
        )
        for name, (ini, extra, _, http) in cases.items()
    }
    try:
        # One after another: a port a starting instance was given could be taken by another's
        # auto-assigned socket in between (seen when they started at once).
        for server in servers.values():
            server.start()
        for name, (_, _, mules, _) in cases.items():
            server = servers[name]
            wait_for_log(server, r"event=build worker=[1-9]", 4)
            wait_for_log(server, r"event=projection_runner ", mules)
        time.sleep(WATCH_SECONDS)  # the point of the test: a crash loop shows within seconds
        logs = {name: server.log() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    bad = {name: crashes(log) for name, log in logs.items() if crashes(log)}
    assert not bad, "\n\n".join(f"{name}:\n" + "\n".join(lines[:10]) for name, lines in bad.items())
    for name, (_, _, mules, _) in cases.items():
        spawned = set(re.findall(r"spawned uWSGI mule (\d+)", logs[name]))
        assert len(spawned) == mules, f"{name}: mules {spawned}, expected {mules}:\n{logs[name]}"
        workers = len(set(re.findall(r"event=build worker=([1-9]\d*)", logs[name])))
        respawns = len(re.findall(r"Respawned uWSGI|crippled", logs[name]))
        print(  # the closing note's table: python | ini | mode | served | workers | mules | respawns
            f"| {sys.version_info.major}.{sys.version_info.minor} | {name} | {mode} | yes | {workers} "
            f"| {len(spawned)} | {respawns} |"
        )


def test_a_copied_uwsgi_ini_migrated_as_the_readme_says_serves_its_read_side(tmp_path: Path) -> None:
    """uwsgi.ini copied elsewhere (its mule line names no path of this checkout), then the README's
    two commands with nothing else set: `uwsgi-es migrate --ini uwsgi.ini` creates the read model
    too (beside the ini: chdir), and a read sees its write."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(INI, site / "uwsgi.ini")
    said = migrate(site / "uwsgi.ini", base_env(), tmp_path)
    assert "BankAccounts, named by the module uwsgi_es.wsgi" in said, said
    assert "read models of balances" in said, said
    assert (site / "var" / "uwsgi_es.sqlite3").is_file()
    server = UwsgiServer(site / "uwsgi.ini", env={}, log_dir=tmp_path / "log").start()
    try:
        wait_for_log(server, r"event=projection_runner ", 1)
        opened = server.post("/accounts", {"owner": "Ann"})
        assert opened.status == 201, opened.body
        position = opened.headers["x-event-position"]
        read = server.get(f"/balances/{opened.json()['id']}", headers={"X-Min-Position": position})
        assert read.status == 200, read.body
        assert read.json()["owner"] == "Ann"
        assert server.get("/ready").status == 200
        log = server.log()
    finally:
        server.stop()
    assert crashes(log) == [], log


@pytest.mark.parametrize("mode", ["prefork", "lazy-apps"])
def test_an_application_setting_naming_another_application_stops_the_start(
    mode: str, tmp_path: Path, sqlite_url: str
) -> None:
    """uwsgi.ini serves the example; UWSGI_ES_APPLICATION naming another application (here one of
    the same class name) was ignored, and the example built into the user's database. uWSGI stops
    at start with one line instead, having built nothing."""
    env = {"UWSGI_ES_DATABASE_URL": sqlite_url, "UWSGI_ES_APPLICATION": LIBRARY_BANK}
    options = ["--lazy-apps"] if mode == "lazy-apps" else []
    server = UwsgiServer(INI, env=env, options=options, log_dir=tmp_path, wait_for="nothing")
    server.start()
    try:
        code = server.process.wait(30) if server.process else None
    finally:
        server.stop()
    log = server.log()
    assert code == 22, log
    # One line (under lazy-apps each worker that imported the module before the master stopped
    # says the same line).
    [line] = {line for line in log.splitlines() if line.startswith("uwsgi_es: cannot start:")}
    assert f"UWSGI_ES_APPLICATION={LIBRARY_BANK!r} names {LIBRARY_BANK}" in line
    assert "the module uwsgi_es.wsgi installs uwsgi_es.example.domain:BankAccounts" in line
    assert "Traceback" not in log, log
    assert "event=build " not in log, log
