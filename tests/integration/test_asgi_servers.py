"""The one-application-per-process guarantee where uWSGI users move to: uvicorn --workers, granian
(its ASGI and WSGI interfaces) and gunicorn's ASGI worker, each with 4 real workers, on SQLite and
the real PostgreSQL. Every worker builds its own application once, after the fork or spawn; a
worker that dies is replaced by one that builds again; an application its parent built by mistake
is forgotten, said, and built again in each worker; the bank invariant holds with concurrent
writers, and SIGKILLed workers under load lose nothing acknowledged."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.cli import migrate
from uwsgi_es.settings import Settings
from uwsgi_es.testing import AsgiServer, UwsgiServer, free_port, lifecycle_events

from ..support.asgi_servers import BANK, SERVERS, WORKERS, serving
from ..support.checks import fan_out, move_money_concurrently
from ..support.hostile import (
    check_only_accepted_writes_changed_the_store,
    events_of,
    feed_length,
    send_hostile_requests,
)
from ..support.load import DepositLoad
from ..support.paths import PROJECT

pytestmark = pytest.mark.integration
ASGI_SERVERS = [s for s in SERVERS if s != "granian wsgi"]
BIN = Path(sys.executable).parent


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"UWSGI_ES_DATABASE_URL": request.getfixturevalue(f"{request.param}_url")}


def worker_reports(served: AsgiServer, workers: int = WORKERS, timeout: float = 30) -> list[dict[str, Any]]:
    """``/worker`` reports until ``workers`` distinct pids answered (or ``timeout`` passed)."""
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout

    def report(_: int) -> dict[str, Any] | None:
        try:
            answer = served.get("/worker", timeout=5)
        except (OSError, http.client.HTTPException):  # a connection the killed worker held
            return None
        return answer.json() if answer.status == 200 else None

    while len({r["pid"] for r in reports}) < workers and time.monotonic() < deadline:
        reports += [r for r in fan_out(40, report, concurrency=8) if r is not None]
    return reports


def assert_built_in_each(served: AsgiServer, reports: list[dict[str, Any]]) -> set[int]:
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert (report["constructions"], report["subscriptions"]) == (1, 1), report
    pids = {r["pid"] for r in reports}
    assert served.pid not in pids, "the parent served a request"
    return pids


@pytest.mark.parametrize("server", SERVERS)
def test_each_worker_builds_one_application_after_the_fork(
    server: str, store_env: dict[str, str], tmp_path: Path
) -> None:
    """4 workers: 4 pids answer, each from the application it built itself, once; a deposit is
    read back; the log has one build per worker (ASGI: in its lifespan, and one close each at
    SIGTERM)."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        pids = assert_built_in_each(served, worker_reports(served))
        assert len(pids) == WORKERS, pids
        account = served.post("/accounts", {"owner": server}).json()["id"]
        deposited = served.post(f"/accounts/{account}/deposits", {"amount": 3})
        assert deposited.json()["balance"] == 3, deposited.body
        assert served.get(f"/accounts/{account}").json()["balance"] == 3
    log = served.log()
    built = sorted(int(e["pid"]) for e in lifecycle_events(log, "build"))
    assert built == sorted(pids), log[-3000:]
    if server in ASGI_SERVERS:
        assert sorted(int(e["pid"]) for e in lifecycle_events(log, "close")) == built, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("server", SERVERS)
def test_a_killed_worker_is_replaced_by_one_that_builds_again(
    server: str, app_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL one worker: the server starts another, which answers from an application it built
    itself, once; the others keep theirs."""
    with serving(server, app_env, tmp_path / "server.log") as served:
        before = assert_built_in_each(served, worker_reports(served))
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            reports = worker_reports(served, timeout=5)
            now = assert_built_in_each(served, reports)
            if now - before:
                break
            assert time.monotonic() < deadline, f"no new worker answered: {now}; {served.log()[-2000:]}"
        assert victim not in now
        assert len(now) == WORKERS, now


@pytest.mark.parametrize("server", ["gunicorn asgi"])
def test_an_application_the_parent_built_is_forgotten_and_built_in_each_worker(
    server: str, app_env: dict[str, str], tmp_path: Path
) -> None:
    """gunicorn --preload with a module that builds at import (in the arbiter, by mistake): each
    worker logs forgot_inherited naming the arbiter's pid, and answers from its own build."""
    target = "tests.apps.asgi_built_at_import:application"
    with serving(server, app_env, tmp_path / "server.log", "--preload", target=target) as served:
        pids = assert_built_in_each(served, worker_reports(served))
    forgot = list(lifecycle_events(served.log(), "forgot_inherited"))
    assert {int(e["built_in_pid"]) for e in forgot} == {served.pid}, served.log()[-3000:]
    assert {int(e["pid"]) for e in forgot} == pids


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_the_bank_invariant_holds_with_concurrent_writers(
    server: str, store_env: dict[str, str], tmp_path: Path
) -> None:
    """600 deposits and withdrawals, 32 at once over 4 workers: each acknowledged once, versions
    1..n, no balance below zero, each balance the sum of what was acknowledged."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        move_money_concurrently(served)
    assert "Traceback" not in served.log(), served.log()[-3000:]


@pytest.mark.reliability
@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_sigkilled_workers_under_load_lose_nothing_acknowledged(
    server: str, store_env: dict[str, str], tmp_path: Path, report: Any
) -> None:
    """8 clients depositing while a worker is SIGKILLed every second for 5 s: every acknowledged
    deposit is stored once, nothing refused is stored, versions stay contiguous."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        load = DepositLoad(served).start()
        try:
            for _ in range(5):
                time.sleep(1)
                pids = {r["pid"] for r in worker_reports(served, workers=1, timeout=5)}
                os.kill(min(pids), signal.SIGKILL)
            time.sleep(1)
        finally:
            load.stop()
        audit = load.audit()
    audit.check()
    report(f"killed workers, {server}", store_env, f"5 workers SIGKILLed over 5s; {audit.line()}")


@pytest.mark.reliability
@pytest.mark.parametrize("server", SERVERS)
def test_a_graceful_reload_under_load_loses_and_doubles_nothing(
    server: str, store_env: dict[str, str], tmp_path: Path, report: Any
) -> None:
    """SIGHUP to the server (each one's graceful reload: new workers, then the old ones retired)
    with 8 clients depositing, each retrying an unanswered deposit with its Idempotency-Key as a
    production client does: every worker is replaced by one that built its own application, every
    deposit is acknowledged, and each is stored once. How many needed a retry (a connection the
    reload dropped) is reported: uWSGI's own reload test allows none."""
    with serving(server, store_env, tmp_path / "server.log") as served:
        before = assert_built_in_each(served, worker_reports(served))
        load = DepositLoad(served, one_writer_per_account=True, retry_with_key=True).start()
        try:
            time.sleep(1)
            os.kill(served.pid, signal.SIGHUP)
            deadline = time.monotonic() + 60
            while (
                not (after := assert_built_in_each(served, worker_reports(served, timeout=5))).isdisjoint(
                    before
                )
                or len(after) < WORKERS
            ):
                assert time.monotonic() < deadline, f"not every worker was replaced: {before} -> {after}"
            time.sleep(1)
        finally:
            load.stop()
        audit = load.audit()
    audit.check()  # retrying: every deposit acknowledged, once
    report(f"graceful reload under load, {server}", store_env, audit.line())


DEPOSITS = 'uwsgi_es_requests_total{method="POST",route="/accounts/<account_id>/deposits",status="200"}'


def deposits_counted(served: AsgiServer) -> set[float]:
    """The deposits /metrics counts, as each of 12 scrapes (spread over the workers) says."""
    counted = set()
    for scrape in fan_out(12, lambda _: served.get("/metrics"), concurrency=4):
        assert scrape.status == 200, (scrape.body, served.log()[-4000:])
        lines = [line for line in scrape.body.decode().splitlines() if line.startswith(DEPOSITS)]
        assert len(lines) == 1, scrape.body.decode()[:3000]
        counted.add(float(lines[0].split()[-1]))
    return counted


@pytest.mark.parametrize("server", SERVERS)
def test_metrics_add_up_every_worker_even_a_killed_one(
    server: str, app_env: dict[str, str], tmp_path: Path
) -> None:
    """UWSGI_ES_METRICS_DIR set: 40 deposits over 4 workers, every scrape counts 40; a worker
    SIGKILLed and replaced, 20 more: every scrape counts 60 (the dead worker's counts kept, its
    file merged by its replacement); a second run in the same directory starts from 0."""
    env = {**app_env, "UWSGI_ES_METRICS_DIR": str(tmp_path / "metrics")}
    with serving(server, env, tmp_path / "server.log") as served:
        account = served.post("/accounts", {"owner": "counted"}).json()["id"]
        deposit = lambda _: served.post(f"/accounts/{account}/deposits", {"amount": 1}).status  # noqa: E731
        assert set(fan_out(40, deposit, concurrency=8)) == {200}
        assert deposits_counted(served) == {40.0}
        before = assert_built_in_each(served, worker_reports(served))
        os.kill(min(before), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (assert_built_in_each(served, worker_reports(served, timeout=5)) - before):
            assert time.monotonic() < deadline, "no worker replaced the killed one"
        assert set(fan_out(20, deposit, concurrency=8)) == {200}
        assert deposits_counted(served) == {60.0}
    with serving(server, env, tmp_path / "again.log") as served:
        account = served.post("/accounts", {"owner": "again"}).json()["id"]
        assert served.post(f"/accounts/{account}/deposits", {"amount": 1}).status == 200
        assert deposits_counted(served) == {1.0}


HOSTILE_EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES_PER_SERVER", "3000"))


@pytest.mark.reliability
@pytest.mark.parametrize("server", SERVERS)
def test_hostile_requests_get_the_answers_they_get_under_uwsgi(
    server: str, app_env: dict[str, str], tmp_path: Path, report: Any
) -> None:
    """The hostile requests of tests/support/hostile.py (hypothesis, byte for byte): no 5xx, an
    answer to each whose length does not lie, no worker dies, and only the accepted writes are
    stored (once each)."""
    with serving(server, app_env, tmp_path / "server.log") as served:
        client = served
        account = client.post("/accounts", {"owner": "witness"}).json()["id"]
        before_feed, before_witness = feed_length(client), events_of(client, account)
        workers = assert_built_in_each(served, worker_reports(served))
        outcome = send_hostile_requests(client, account, HOSTILE_EXAMPLES)
        assert assert_built_in_each(served, worker_reports(served)) == workers, "a worker died"
        check_only_accepted_writes_changed_the_store(client, account, outcome, before_witness, before_feed)
    assert "Traceback" not in served.log(), served.log()[-3000:]
    report(
        f"hostile input under {server}",
        app_env,
        f"{sum(outcome.statuses.values())} requests, statuses {dict(sorted(outcome.statuses.items()))}, "
        f"5xx 0, worker deaths 0, {len(outcome.accepted_writes)} accepted writes stored once each",
    )


@pytest.fixture
def readside_env(request: pytest.FixtureRequest, store_env: dict[str, str]) -> dict[str, str]:
    """``store_env`` with the example's read model created (uwsgi-es migrate)."""
    migrate(Settings(database_url=store_env["UWSGI_ES_DATABASE_URL"], application=BANK))
    return store_env


def group_gone(group: int, timeout: float = 30) -> bool:
    """Whether the process group ended within ``timeout``; if not, it is killed (SIGKILL)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            os.killpg(group, signal.SIGKILL)
            return False
        time.sleep(0.05)


def procfile() -> dict[str, str]:
    """deploy/Procfile's processes: name -> command line."""
    lines = (PROJECT / "deploy" / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_the_read_side_beside_a_server_without_mules_as_the_procfile_runs_it(
    readside_env: dict[str, str], tmp_path: Path
) -> None:
    """deploy/Procfile's two processes exactly as shipped (granian's 4 workers, and `uwsgi-es
    project balances` beside them): 200 write-then-read pairs, 8 at a time, each read asking for
    its write's position (X-Min-Position) on whichever worker, and each showing its write; the
    runner ends cleanly on SIGTERM; and the shipped systemd unit for such a runner passes
    systemd-analyze verify."""
    processes = procfile()
    port = free_port()
    env = {**os.environ, **readside_env, "PORT": str(port), "PATH": f"{BIN}:{os.environ['PATH']}"}
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in processes}
    started = {
        name: subprocess.Popen(
            ["/bin/sh", "-c", line],
            cwd=PROJECT,
            env=env,
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, line in processes.items()
    }
    client = UwsgiServer(options=[], log_dir=tmp_path, wait_for="nothing")
    client.port = port
    lingered: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if client.get("/health", timeout=2).status == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "web.log").read_text()
            time.sleep(0.1)
        accounts = [client.post("/accounts", {"owner": f"sidecar {i}"}).json()["id"] for i in range(8)]

        def pair(i: int) -> bool:
            account = accounts[i % 8]
            written = client.post(f"/accounts/{account}/deposits", {"amount": 1})
            assert written.status == 200, written.body
            read = client.get(
                f"/balances/{account}", headers={"X-Min-Position": written.headers["x-event-position"]}
            )
            return read.status == 200 and read.json()["version"] >= written.json()["version"]

        assert all(fan_out(200, pair, concurrency=8))
    finally:
        for process in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in started.items():
            process.wait(30)
            if not group_gone(process.pid):  # sh ends at once; what it started, when it has finished
                lingered.append(name)
        for out in logs.values():
            out.close()
    runner_log = (tmp_path / "balances.log").read_text()
    assert "event=projection_runner" in runner_log, runner_log
    assert "uwsgi-es project: balances stopped" in runner_log, runner_log
    assert "balances" not in lingered, "the runner outlived SIGTERM by 30 s"
    assert "Traceback" not in runner_log + (tmp_path / "web.log").read_text()
    unit = (PROJECT / "deploy" / "uwsgi-es-project@.service").read_text()
    instance = tmp_path / "uwsgi-es-project@balances.service"
    instance.write_text(
        unit.replace("/srv/uwsgi-es/.venv/bin/", f"{BIN}/").replace("/srv/uwsgi-es", str(PROJECT))
    )
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    verified = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr


def test_the_starlette_example_builds_once_in_each_uvicorn_worker(
    app_env: dict[str, str], tmp_path: Path
) -> None:
    """examples/starlette_bank.py under uvicorn --workers 4: one build in each worker (none in the
    parent, nothing forgotten), commands on the bounded pool, and the JSON API's statuses: 201,
    200, 400 for a bad amount, 404 for an unknown account or movement, 409 for an overdraft."""
    target = "examples.starlette_bank:app"
    with serving("uvicorn", app_env, tmp_path / "server.log", target=target) as served:
        client = served
        opened = client.post("/accounts", {"owner": "starlette"})
        assert opened.status == 201, opened.body
        account = opened.json()["id"]
        deposits = fan_out(40, lambda _: client.post(f"/accounts/{account}/deposits", {"amount": 5}).status)
        assert set(deposits) == {200}
        assert client.get(f"/accounts/{account}").json()["balance"] == 200
        assert client.post(f"/accounts/{account}/deposits", {"amount": 0}).status == 400
        assert client.post(f"/accounts/{account}/deposits", {"amount": "5"}).status == 400
        assert client.post(f"/accounts/{account}/gifts", {"amount": 5}).status == 404
        unknown = client.get("/accounts/00000000-0000-0000-0000-000000000001")
        assert unknown.status == 404, unknown.body
        overdraft = client.post(f"/accounts/{account}/withdrawals", {"amount": 201})
        assert overdraft.status == 409, overdraft.body
        assert "insufficient" in overdraft.json()["error"].lower(), overdraft.body
    log = served.log()
    built = [int(e["pid"]) for e in lifecycle_events(log, "build")]
    assert len(built) == len(set(built)) == WORKERS, log[-3000:]
    assert served.pid not in built
    assert not list(lifecycle_events(log, "forgot_inherited"))
    assert "Traceback" not in log, log[-3000:]
