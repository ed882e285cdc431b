"""One application per uWSGI worker, proven on real uWSGI in every process mode, on every store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.testing import UwsgiServer, UwsgiStartError, lifecycle_events

from ..support.checks import all_events, assert_one_application_per_worker, builds, fan_out, worker_reports
from ..support.paths import INI

pytestmark = [pytest.mark.integration, pytest.mark.interpreters]
StartServer = Any


def test_prefork_one_application_per_worker(uwsgi_server: StartServer, backend_env: dict[str, str]) -> None:
    """4 processes, 400 concurrent requests: each pid built once, in itself; the master never serves."""
    server = uwsgi_server(INI, env=backend_env, options=["--processes", "4"])
    reports = worker_reports(server, 400)
    pids = assert_one_application_per_worker(server, reports)
    assert len(pids) >= 2, f"only {pids} answered 400 concurrent requests"
    assert pids <= set(server.worker_pids())
    print(f"prefork: {len(pids)} workers answered; startup {server.startup_seconds:.2f}s")


@pytest.mark.parametrize("freeze", ["true", "false"])
def test_objects_inherited_from_the_master_are_frozen_unless_turned_off(
    uwsgi_server: StartServer, app_env: dict[str, str], freeze: str
) -> None:
    """The build starts with gc.freeze(), so the worker's collector never copies the pages of the
    master's objects; UWSGI_ES_GC_FREEZE=false leaves the collector as Python made it."""
    env = {**app_env, "UWSGI_ES_GC_FREEZE": freeze}
    server = uwsgi_server(INI, env=env, options=["--processes", "2"])
    reports = worker_reports(server, 40)
    assert_one_application_per_worker(server, reports)
    frozen = {r["pid"]: r["gc_frozen"] for r in reports}
    if freeze == "true":
        # the modules the master imported (SQLAlchemy, Werkzeug, the app) hold far more than this
        assert min(frozen.values()) > 10_000, frozen
    else:
        # as Python made it: what a fresh interpreter of this version reports (0; 375 on 3.12.1)
        made = subprocess.run(
            [sys.executable, "-c", "import gc; print(gc.get_freeze_count())"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert set(frozen.values()) == {int(made.stdout)}, frozen


def test_lazy_apps_builds_at_import_in_each_worker(
    uwsgi_server: StartServer, backend_env: dict[str, str]
) -> None:
    """With lazy-apps the @postfork never runs for the app module; the build happens at import."""
    server = uwsgi_server(INI, env=backend_env, options=["--processes", "4", "--lazy-apps"])
    pids = assert_one_application_per_worker(server, worker_reports(server, 400))
    assert len(pids) >= 2
    assert {e["application"] for e in lifecycle_events(server.log(), "build")} == {"BankAccounts"}


def test_threads_share_one_application_per_process(
    uwsgi_server: StartServer, backend_env: dict[str, str]
) -> None:
    """2 processes x 4 threads: threads of a worker share its one application."""
    server = uwsgi_server(
        INI,
        env=backend_env,
        options=["--processes", "2", "--threads", "4", "--async", "0", "--loop", "simple"],
    )
    pids = assert_one_application_per_worker(server, worker_reports(server, 400))
    assert len(pids) == 2


@pytest.mark.parametrize("lazy", [False, True], ids=["prefork", "lazy-apps"])
def test_respawned_workers_build_exactly_once(
    uwsgi_server: StartServer, backend_env: dict[str, str], lazy: bool
) -> None:
    """max-requests 5: workers are replaced constantly; every replacement builds once, in itself."""
    options = ["--processes", "4", "--max-requests", "5", "--min-worker-lifetime", "0"]
    server = uwsgi_server(INI, env=backend_env, options=options + (["--lazy-apps"] if lazy else []))
    pids = assert_one_application_per_worker(server, worker_reports(server, 100, concurrency=8))
    assert len(pids) > 4, f"expected respawned workers, saw only {sorted(pids)}"
    print(f"respawn ({'lazy' if lazy else 'prefork'}): {len(pids)} distinct worker pids over 100 requests")


def test_concurrent_deposits_are_stored_exactly_once(
    uwsgi_server: StartServer, backend_env: dict[str, str]
) -> None:
    """Deposits to 3 accounts from 4x2 workers: balances and versions 1..n match the 200s exactly."""
    server = uwsgi_server(
        INI,
        env=backend_env,
        options=["--processes", "4", "--threads", "2", "--async", "0", "--loop", "simple"],
    )
    accounts = [server.post("/accounts", {"owner": f"owner {i}"}).json()["id"] for i in range(3)]

    def deposit(i: int) -> tuple[str, int, int]:
        account = accounts[i % 3]
        amount = 1 + i % 7
        return account, amount, server.post(f"/accounts/{account}/deposits", {"amount": amount}).status

    outcomes = fan_out(300, deposit, concurrency=24)
    assert {status for _, _, status in outcomes} <= {200, 409}
    for account in accounts:
        acknowledged = [amount for a, amount, status in outcomes if a == account and status == 200]
        state = server.get(f"/accounts/{account}").json()
        events = all_events(server, account)
        assert state["balance"] == sum(acknowledged)
        assert [e["version"] for e in events] == list(range(1, len(acknowledged) + 2))
        assert state["version"] == len(acknowledged) + 1
    reports = worker_reports(server, 40)
    conflicts = sum(r["conflicts"] for r in {r["pid"]: r for r in reports}.values())
    refused = sum(1 for *_, status in outcomes if status == 409)
    print(
        f"deposits: 300 sent, {300 - refused} acknowledged, {refused} refused after retries, "
        f"{conflicts}+ conflicts seen"
    )


def test_failed_initialisation_never_serves_200(uwsgi_server: StartServer, app_env: dict[str, str]) -> None:
    """An invalid setting: every route but /health answers 503 with a stable reason, /ready fails;
    the log and the operator's /worker name the variable."""
    env = {**app_env, "UWSGI_ES_POOL_SIZE": "plenty"}
    server = uwsgi_server(INI, env=env, options=["--processes", "2"], wait_for="health")
    results = fan_out(40, lambda i: server.get(["/ready", "/worker", "/accounts/" + "0" * 32][i % 3]))
    for result in results:
        assert result.status == 503
        assert result.json()["error"] == "the application is not ready in this worker"
        assert result.elapsed < 5
    assert all("UWSGI_ES_POOL_SIZE" in r.json()["detail"] for r in results[1::3])  # /worker, from here
    failures = list(lifecycle_events(server.log(), "build_failed"))
    assert {e["error"].split(":")[0] for e in failures} == {"SettingsError"}
    assert all(int(e["worker"]) >= 1 for e in failures)


def test_nothing_connects_in_the_master(uwsgi_server: StartServer, app_env: dict[str, str]) -> None:
    """The master holds no handle on the database file; every worker does only after building."""
    server = uwsgi_server(INI, env=app_env, options=["--processes", "2"])
    database = Path(app_env["UWSGI_ES_DATABASE_URL"].removeprefix("sqlite:///")).resolve()

    def open_files(pid: int) -> set[str]:
        fd_dir = Path(f"/proc/{pid}/fd")
        return {os.path.realpath(fd_dir / fd) for fd in os.listdir(fd_dir)}

    assert str(database) not in open_files(server.pid)
    built = builds(server)
    assert server.pid not in built
    # uwsgi.ini's projection mule builds its own application too, after its own fork.
    mules = {int(e["pid"]) for e in lifecycle_events(server.log(), "build") if e.get("mule")}
    assert len(mules) == 1
    assert set(built) - mules == set(server.worker_pids())


@pytest.mark.reliability
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_signals_stop_everything_and_each_worker_closes(
    backend_env: dict[str, str], tmp_path: Path, signum: int, report: Any
) -> None:
    """SIGINT and SIGTERM (die-on-term) stop the whole instance within 5 s; each worker closes its
    application (engine disposed, Cassandra cluster shut down) and says so in the log."""
    server = UwsgiServer(INI, env=backend_env, options=["--processes", "3"], log_dir=tmp_path).start()
    try:
        workers = set(server.worker_pids())
        started = time.monotonic()
        os.kill(server.pid, signum)
        code = server.process.wait(10)  # type: ignore[union-attr]
        took = time.monotonic() - started
    finally:
        server.stop()
    closed = [(e["pid"], e["released"]) for e in lifecycle_events(server.log(), "close")]
    assert {int(pid) for pid, _ in closed} == workers
    assert took < 5
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    report(
        f"clean stop ({signal.Signals(signum).name})",
        backend_env,
        f"{len(workers)} workers closed ({closed[0][1]}), stopped in {took:.2f}s",
    )


@pytest.mark.parametrize("lazy", [False, True], ids=["prefork", "lazy-apps"])
def test_reload_replaces_every_worker_and_each_builds_once(
    uwsgi_server: StartServer, backend_env: dict[str, str], lazy: bool
) -> None:
    """SIGHUP (graceful reload): new workers, each built once in itself; stored data survives."""
    server = uwsgi_server(
        INI, env=backend_env, options=["--processes", "3"] + (["--lazy-apps"] if lazy else [])
    )
    account = server.post("/accounts", {"owner": "before reload"}).json()["id"]
    before = set(server.worker_pids())
    os.kill(server.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            after = set(server.worker_pids())
        except OSError:  # the stats server is re-bound during the reload
            after = set()
        if len(after) == 3 and not after & before:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"workers were not replaced: before {before}, now {after}")
    server.wait_until_ready()
    pids = assert_one_application_per_worker(server, worker_reports(server, 120))
    assert not pids & before
    assert server.get(f"/accounts/{account}").json()["owner"] == "before reload"


def test_memory_database_is_refused_with_several_workers(uwsgi_server: StartServer) -> None:
    """sqlite:///:memory: would give each worker its own empty database: 503 naming the variable."""
    env = {"UWSGI_ES_DATABASE_URL": "sqlite:///:memory:"}
    server = uwsgi_server(INI, env=env, options=["--processes", "2"], wait_for="health")
    for result in fan_out(10, lambda _: server.get("/worker")):
        assert result.status == 503
        assert result.json()["error"] == "the application is not ready in this worker"
        assert (
            "UWSGI_ES_DATABASE_URL='sqlite:///:memory:' is an in-memory SQLite database"
            in (result.json()["detail"])
        )
    assert "is an in-memory SQLite database" in server.log()


@pytest.mark.parametrize("fail_fast", ["false", "true"])
def test_a_misspelt_variable_is_named_with_its_fix(
    uwsgi_server: StartServer, app_env: dict[str, str], tmp_path: Path, fail_fast: str
) -> None:
    """UWSGI_ES_POOL_SZIE: uwsgi_es, not uWSGI's strict mode ("unknown config directive: es-pool-szie"),
    refuses it, naming the variable and the likely fix; with fail-fast the instance stops with 22."""
    env = {**app_env, "UWSGI_ES_POOL_SZIE": "5", "UWSGI_ES_FAIL_FAST": fail_fast}
    message = "Unknown setting UWSGI_ES_POOL_SZIE. Did you mean UWSGI_ES_POOL_SIZE?"
    if fail_fast == "true":
        server = UwsgiServer(INI, env=env, log_dir=tmp_path, startup_timeout=20)
        with pytest.raises(UwsgiStartError, match="exited with code 22"):
            server.start()
        assert message in server.log()
        return
    server = uwsgi_server(INI, env=env, options=["--processes", "2"], wait_for="health")
    assert server.get("/ready").status == 503
    assert message in server.get("/worker").json()["detail"]
    assert message in server.log()
    assert "unknown config directive" not in server.log()


@pytest.mark.parametrize("lazy", [False, True], ids=["prefork", "lazy-apps"])
def test_a_worker_names_the_threads_its_master_was_running_at_the_fork(
    uwsgi_server: StartServer, app_env: dict[str, str], lazy: bool
) -> None:
    """A thread started at import runs in the master (prefork): without fork hooks none of them
    exists in a worker, yet a lock it held at the fork stays held there. Each worker says which,
    and the fix; under lazy-apps the module is imported in the worker, and nothing is said."""
    options = ["--module", "tests.apps.threads_in_master:application", "--processes", "2"]
    server = uwsgi_server(INI, env=app_env, options=options + (["--lazy-apps"] if lazy else []))
    assert server.get("/health").status == 200
    said = list(lifecycle_events(server.log(), "threads_inherited"))
    if lazy:
        assert said == []
        return
    assert {e["role"] for e in said} >= {"worker 1", "worker 2"}, server.log()
    assert all("ticker" in e["threads"] for e in said)
    assert all("py-call-uwsgi-fork-hooks" in e["fix"] for e in said)
