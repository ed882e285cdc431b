"""The read side under real uWSGI: projection runners in mules (uwsgi.ini declares one; these tests
add a second for the ``Effects`` projection of tests/apps/readside_app.py), on SQLite and on the
real PostgreSQL. Mules killed under load, the LISTEN connection terminated, a poison event, reads
that ask for their own writes, Cassandra refused; and ``uwsgi-es project`` outside uWSGI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import create_engine, func, select

from uwsgi_es.cli import migrate
from uwsgi_es.example.balances import balances_table
from uwsgi_es.runtime.process import PROJECTION_MULE
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy.schema import records_table, tracking_table
from uwsgi_es.testing import UwsgiServer, lifecycle_events

from ..apps.readside_app import effects_table
from ..support.checks import fan_out
from ..support.listeners import count_listeners, terminate_listeners
from ..support.load import DepositLoad
from ..support.paths import INI, PROJECT
from ..support.wrk import WrkDeposits

pytestmark = pytest.mark.integration
StartServer = Any
APP = "tests.apps.readside_app:Bank"
TWO_RUNNERS = [
    "--module",
    "tests.apps.readside_app:application",
    f"--mule={PROJECTION_MULE}",
]  # `=`: optional
KILL_SECONDS = 20.0
SUSTAINED_SECONDS = float(os.environ.get("ES_TEST_SUSTAINED_SECONDS", "60"))
CATCH_UP_SECONDS = 2.0
BANK_TOPICS = "uwsgi_es.example.domain:"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database with the read models of tests.apps.readside_app:Bank too (its Effects)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    migrate(Settings(database_url=url, application=APP))
    return url


def env_for(url: str, **extra: str) -> dict[str, str]:
    return {"UWSGI_ES_DATABASE_URL": url, **extra}


def fold(url: str) -> tuple[dict[str, int], int, int]:
    """From the bank's stored events: each account's balance, their number, the last position of
    any event."""
    engine = create_engine(url)
    balances: dict[str, int] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(records_table.c.originator_id, records_table.c.topic, records_table.c.state).order_by(
                records_table.c.id
            )
        ).all()
        last = connection.execute(select(func.max(records_table.c.id))).scalar() or 0
    engine.dispose()
    rows = [row for row in rows if row.topic.startswith(BANK_TOPICS)]  # not another application's
    for originator, topic, state in rows:
        key = str(originator)
        if topic.endswith("Opened"):
            balances[key] = 0
        else:
            amount = int(json.loads(state)["amount"])
            balances[key] += amount if topic.endswith("Deposited") else -amount
    return balances, len(rows), int(last)


def read_models(url: str, *, effects: bool = True) -> tuple[dict[str, int], dict[str, int], tuple[int, int]]:
    """The balances read model, the tracking positions, and the effects (rows, distinct positions)."""
    engine = create_engine(url)
    counted = (0, 0)
    with engine.connect() as connection:
        balances = {
            str(a): b
            for a, b in connection.execute(select(balances_table.c.account_id, balances_table.c.balance))
        }
        positions = {
            p: int(n)
            for p, n in connection.execute(select(tracking_table.c.projection, tracking_table.c.position))
        }
        if effects:
            row = connection.execute(
                select(func.count(), func.count(effects_table.c.position.distinct()))
            ).one()
            counted = (int(row[0]), int(row[1]))
    engine.dispose()
    return balances, positions, counted


def caught_up(server: UwsgiServer, timeout: float = 30.0) -> float:
    """Seconds until every projection reports no lag on /worker (fails after ``timeout``)."""
    started = time.monotonic()
    while True:
        projections = server.get("/worker").json()["projections"]
        if all(p["lag"] == 0 for p in projections.values()):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, projections
        time.sleep(0.05)


def mule_pids(server: UwsgiServer) -> dict[str, int]:
    """The current pid of each runner mule ("mule 1", "mule 2"), from the runners' log events."""
    pids: dict[str, int] = {}
    for event in lifecycle_events(server.log(), "projection_runner"):
        pids[event["role"]] = int(event["pid"])
    return pids


@pytest.mark.interpreters
def test_each_mule_builds_one_application_after_its_fork_and_runs_one_projection(
    uwsgi_server: StartServer, database_url: str
) -> None:
    """Two runner mules: each built its own application, once, in itself (never in the master),
    and runs one projection: mule 1 balances, mule 2 effects."""
    server = uwsgi_server(INI, env=env_for(database_url), options=TWO_RUNNERS)
    account = server.post("/accounts", {"owner": "mules"}).json()["id"]
    assert server.post(f"/accounts/{account}/deposits", {"amount": 5}).status == 200
    caught_up(server)
    runners = {e["role"]: e for e in lifecycle_events(server.log(), "projection_runner")}
    assert {role: e["projection"] for role, e in runners.items()} == {
        "mule 1": "balances",
        "mule 2": "effects",
    }
    builds = [e for e in lifecycle_events(server.log(), "build") if e.get("mule")]
    assert sorted(int(e["mule"]) for e in builds) == [1, 2]
    assert {int(e["pid"]) for e in builds} == {int(e["pid"]) for e in runners.values()}
    assert server.pid not in {int(e["pid"]) for e in builds}
    balances, events, last = fold(database_url)
    model, positions, effects = read_models(database_url)
    assert model == balances
    assert positions == {"balances": last, "effects": last}
    assert effects == (events, events)


@pytest.mark.interpreters
@pytest.mark.reliability
def test_killed_mules_resume_and_apply_every_event_exactly_once(
    uwsgi_server: StartServer, database_url: str, report: Any
) -> None:
    """Under write load, a runner mule is SIGKILLed every 2 s for 20 s; uWSGI respawns it, it
    resumes from its tracking record. Afterwards the read model equals a fold of the stored
    events, both positions equal the last event's, and no event was processed twice."""
    server = uwsgi_server(INI, env=env_for(database_url), options=TWO_RUNNERS)
    load = DepositLoad(server, one_writer_per_account=True).start()
    kills = 0
    deadline = time.monotonic() + KILL_SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(2)
            victims = mule_pids(server)
            role = ("mule 1", "mule 2")[kills % 2]
            os.kill(victims[role], signal.SIGKILL)
            kills += 1
    finally:
        load.stop()
    audit = load.audit()
    audit.check()
    lag_seconds = caught_up(server)
    balances, events, last = fold(database_url)
    model, positions, effects = read_models(database_url)
    assert model == balances
    assert positions == {"balances": last, "effects": last}
    assert effects == (events, events), f"{effects[0] - effects[1]} events processed twice"
    respawned = list(lifecycle_events(server.log(), "projection_runner"))
    assert len(respawned) >= kills + 2, "a killed mule did not come back"
    report(
        "projection mules killed under load",
        env_for(database_url),
        f"{kills} mules SIGKILLed over {KILL_SECONDS:.0f}s; {events} events, read models equal to the "
        f"fold, each event processed once; caught up {lag_seconds:.2f}s after the load stopped; "
        f"{audit.line()}",
    )


class OwnWrites:
    """A client depositing into an account of its own and reading the balance back at once, asking
    for its write's position (X-Min-Position), until stopped: what a user of the read side does."""

    def __init__(self, server: UwsgiServer) -> None:
        self.server = server
        self.account = server.post("/accounts", {"owner": "own writes"}).json()["id"]
        self.pairs = 0
        self.unseen: list[str] = []  # reads that did not show their write (status and body)
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._pairs, daemon=True)

    def start(self) -> OwnWrites:
        self._running.set()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running.clear()
        self._thread.join(30)

    def _pairs(self) -> None:
        while self._running.is_set():
            written = self.server.post(f"/accounts/{self.account}/deposits", {"amount": 1})
            if written.status != 200:
                continue  # the write's own failure is the load audit's business
            read = self.server.get(
                f"/balances/{self.account}", headers={"X-Min-Position": written.headers["x-event-position"]}
            )
            self.pairs += 1
            if read.status != 200 or read.json()["version"] < written.json()["version"]:
                self.unseen.append(f"{read.status} {read.body[:200]!r}")


def stored_events(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(records_table)).scalar() or 0
    engine.dispose()
    return int(count)


@pytest.mark.reliability
def test_the_read_side_keeps_up_with_the_maximum_write_rate(
    uwsgi_server: StartServer, database_url: str, report: Any, tmp_path: Path
) -> None:
    """uwsgi.ini as shipped (4 workers, the balances projection in its mule) under wrk depositing
    flat out (8 connections over 64 accounts) for SUSTAINED_SECONDS, and a client reading each of
    its own writes back: when the load stops the projection is at most one second of writes
    behind (the rate measured in this run) and at 0 within 2 s; every read saw its write; no
    deposit failed; the read model equals a fold of the events."""
    server = uwsgi_server(INI, env=env_for(database_url))
    accounts = [server.post("/accounts", {"owner": f"flat out {i}"}).json()["id"] for i in range(64)]
    own = OwnWrites(server)
    load = WrkDeposits(server, accounts, SUSTAINED_SECONDS, tmp_path)
    first = stored_events(database_url)
    started = time.monotonic()
    load.start()
    own.start()
    lags: list[int] = []  # sampled every half second while the load runs
    try:
        while True:
            time.sleep(0.5)
            lag = server.get("/worker").json()["projections"]["balances"]["lag"]
            if not load.running():
                break
            lags.append(lag)
        seconds = time.monotonic() - started
    finally:
        load.kill()  # only if a failure above left it running
        own.stop()
    result = load.wait()
    lag_at_end = lags[-1]  # the last sample taken while the load ran
    written = stored_events(database_url) - first
    rate = written / seconds
    catching_up = caught_up(server, timeout=CATCH_UP_SECONDS)
    balances, _, last = fold(database_url)
    model, positions, _ = read_models(database_url, effects=False)
    figures = (
        f"{written} events in {seconds:.0f}s ({rate:.0f}/s; wrk {result.rate:.0f} deposits/s, "
        f"{result.failed} failed); lag when the load stopped {lag_at_end} events "
        f"({lag_at_end / rate:.2f}s of writes), sampled every 0.5s: max {max(lags)}, median "
        f"{sorted(lags)[len(lags) // 2]}; at 0 {catching_up:.2f}s later; "
        f"{own.pairs - len(own.unseen)}/{own.pairs} reads saw their own write"
    )
    report("read side at the maximum write rate", env_for(database_url), figures)
    assert result.failed == 0, result.output
    assert lag_at_end <= rate, figures
    assert own.unseen == [], (figures, own.unseen[:5])
    assert own.pairs > 0
    assert model == balances
    assert positions["balances"] == last


@pytest.mark.reliability
def test_a_terminated_listen_connection_costs_at_most_the_poll_interval(
    uwsgi_server: StartServer, postgres_url: str, report: Any
) -> None:
    """pg_terminate_backend on the runners' LISTEN connections under the full write load (8
    writers): they poll (1 s), keep up, and listen again; every read asking for its write is
    answered."""
    migrate(Settings(database_url=postgres_url, application=APP))
    env = env_for(postgres_url, UWSGI_ES_READSIDE_POLL_INTERVAL="1")
    server = uwsgi_server(INI, env=env, options=TWO_RUNNERS)
    load = DepositLoad(server, one_writer_per_account=True).start()
    engine = create_engine(postgres_url)
    try:
        try:
            time.sleep(1)
            assert terminate_listeners(engine) == [True, True]
            account = server.post("/accounts", {"owner": "after the kill"}).json()["id"]
            written = server.post(f"/accounts/{account}/deposits", {"amount": 9})
            position = written.headers["x-event-position"]
            started = time.monotonic()
            read = server.get(f"/balances/{account}", headers={"X-Min-Position": position})
            took = time.monotonic() - started
            assert read.status == 200, read.body
            assert read.json()["balance"] == 9
            time.sleep(2)
        finally:
            load.stop()
        audit = load.audit()
        audit.check()
        caught_up(server)
        listening = count_listeners(engine)
    finally:
        engine.dispose()  # also when an assertion failed: no connection left to the collector
    assert listening == 2, "the runners did not listen again"
    assert len(list(lifecycle_events(server.log(), "readside_listener_lost"))) == 2
    report(
        "LISTEN connection terminated under load",
        env,
        f"2 listeners terminated; a read asking for its write answered in {took:.2f}s (poll interval 1 s); "
        f"both listening again; {audit.line()}",
    )


def test_a_poison_event_stops_its_projection_and_a_fixed_restart_resumes_it(
    uwsgi_server: StartServer, database_url: str, tmp_path: Path
) -> None:
    """Effects raises on the "poison" account: it stops there (the events before it applied),
    /ready answers 503 naming projection, position and topic, balances goes on; restarted
    without the bug, it resumes at that event and skips nothing."""
    server = uwsgi_server(INI, env=env_for(database_url, READSIDE_POISON="1"), options=TWO_RUNNERS)
    opened_before = server.post("/accounts", {"owner": "before"})
    before = opened_before.json()["id"]
    poison = server.post("/accounts", {"owner": "poison"})
    after = server.post(f"/accounts/{before}/deposits", {"amount": 4})
    deadline = time.monotonic() + 15
    while (ready := server.get("/ready")).status == 200:
        assert time.monotonic() < deadline, "the projection did not stop"
        time.sleep(0.05)
    assert ready.status == 503
    message = ready.json()["error"]
    position = int(poison.headers["x-event-position"])
    assert f"'effects' is stopped at position {position}" in message
    assert "BankAccount.Opened" in message
    assert "ValueError" in message
    assert "secret detail" not in message
    read = server.get(f"/balances/{before}", headers={"X-Min-Position": after.headers["x-event-position"]})
    assert read.json()["balance"] == 4, "balances stopped too"
    assert poison.status == 201
    _, positions, effects = read_models(database_url)
    assert positions["effects"] == int(opened_before.headers["x-event-position"])
    assert effects == (1, 1)
    assert "event=projection_stopped" in server.log()
    server.stop()
    fixed = uwsgi_server(INI, env=env_for(database_url), options=TWO_RUNNERS)
    caught_up(fixed)
    assert fixed.get("/ready").status == 200
    _, events, last = fold(database_url)
    _, positions, effects = read_models(database_url)
    assert positions == {"balances": last, "effects": last}
    assert effects == (events, events)


def operator(url: str, *arguments: str, **extra: str) -> tuple[int, str]:
    """`uwsgi-es ARGUMENTS` as an operator runs it beside the service: (exit status, output)."""
    env = {**os.environ, **env_for(url, UWSGI_ES_APPLICATION=APP, **extra)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "uwsgi-es"), *arguments],
        check=False,
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def projection_states(url: str) -> dict[str, dict[str, Any]]:
    status, output = operator(url, "status", "--json")
    states = {p["projection"]: p for p in json.loads(output)}
    running = all(p["state"] == "running" for p in states.values())
    assert status == (0 if running else 1), output
    return states


def wait_for_state(url: str, name: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not check(state := projection_states(url)[name]):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    return state


def test_an_operator_parks_a_poison_event_replays_it_and_rebuilds_a_read_model_under_writes(
    uwsgi_server: StartServer, database_url: str
) -> None:
    """With deposits going on: Effects stops at the poison account's event; `uwsgi-es status`
    says so (exit 1); `uwsgi-es park effects` sets it aside and the running mule goes on after it,
    no restart; replaying it while the bug is there fails and keeps it parked, after the fix it
    is applied and forgotten; `uwsgi-es reset balances --yes` empties the balances and the mule
    rebuilds them. At the end both read models equal the events, each event applied once."""
    server = uwsgi_server(INI, env=env_for(database_url, READSIDE_POISON="1"), options=TWO_RUNNERS)
    load = DepositLoad(server, one_writer_per_account=True).start()
    try:
        poison = int(server.post("/accounts", {"owner": "poison"}).headers["x-event-position"])
        stopped = wait_for_state(database_url, "effects", lambda s: s["state"] == "stopped")
        assert stopped["stopped_at"] == poison
        assert stopped["error"].startswith("ValueError")
        runners_before = len(list(lifecycle_events(server.log(), "projection_runner")))

        status, output = operator(database_url, "park", "effects")
        assert status == 0, output
        assert f"parked the event at position {poison}" in output
        assert f"uwsgi-es replay effects {poison}" in output
        running = wait_for_state(database_url, "effects", lambda s: s["state"] == "running", timeout=10)
        assert [p["position"] for p in running["parked"]] == [poison]
        deadline = time.monotonic() + 5  # the stopped runner looks each PARK_CHECK (1 s)
        while "projection_resumed" not in server.log():
            assert time.monotonic() < deadline, "the mule did not go on after the parked event"
            time.sleep(0.1)
        assert len(list(lifecycle_events(server.log(), "projection_runner"))) == runners_before

        status, output = operator(database_url, "replay", "effects", str(poison), READSIDE_POISON="1")
        assert status == 1, output
        assert "failed again: ValueError" in output
        assert "It stays parked" in output
        status, output = operator(database_url, "replay", "effects", str(poison))
        assert status == 0, output
        assert projection_states(database_url)["effects"]["parked"] == []

        status, output = operator(database_url, "reset", "balances", "--yes")
        assert status == 0, output
        assert "its position back at 0" in output
        time.sleep(1)
    finally:
        load.stop()
    load.audit().check()
    caught_up(server)
    balances, events, last = fold(database_url)
    model, positions, effects = read_models(database_url)
    assert model == balances
    assert positions == {"balances": last, "effects": last}
    assert effects == (events, events), "an event applied twice, or the parked one never"


def test_a_rebuild_switches_the_read_model_under_reads_and_writes_in_one_step(
    uwsgi_server: StartServer, database_url: str
) -> None:
    """uwsgi.ini as shipped, 8 writers depositing, a reader polling one account whose live balance
    was made wrong on purpose: `uwsgi-es rebuild balances` fills a new read model beside the live
    one and switches. The reader sees the wrong balance, then the right one, never back, never
    an error or a missing row; the mule is never restarted and goes on from the new position;
    nothing acknowledged is lost and the model equals the events."""
    server = uwsgi_server(INI, env=env_for(database_url))
    account = server.post("/accounts", {"owner": "made wrong"}).json()["id"]
    written = server.post(f"/accounts/{account}/deposits", {"amount": 100})
    position = written.headers["x-event-position"]
    assert server.get(f"/balances/{account}", headers={"X-Min-Position": position}).status == 200
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                balances_table.update().where(balances_table.c.account_id == UUID(account)).values(balance=-1)
            )
    finally:
        engine.dispose()
    load = DepositLoad(server).start()
    seen: list[tuple[int, int | None]] = []
    reading = threading.Event()
    reading.set()

    def read() -> None:
        while reading.is_set():
            answer = server.get(f"/balances/{account}")
            seen.append((answer.status, answer.json().get("balance") if answer.status == 200 else None))

    reader = threading.Thread(target=read)
    try:
        time.sleep(3)  # some thousands of events for the rebuild to fill from
        reader.start()
        time.sleep(0.5)
        status, output = operator(database_url, "rebuild", "balances")
        time.sleep(0.5)
    finally:
        reading.clear()
        if reader.is_alive():
            reader.join(10)
        load.stop()
    assert status == 0, output
    assert "switched in" in output
    assert [s for s in seen if s[0] != 200] == []
    balances = [b for _, b in seen]
    switch = balances.index(100)
    assert set(balances[:switch]) == {-1}, "the new model was seen before the switch"
    assert set(balances[switch:]) == {100}, "the old model was seen after the switch"
    load.audit().check()
    caught_up(server)
    model, positions, _ = read_models(database_url, effects=False)
    folded, _, last = fold(database_url)
    assert model == folded
    assert positions["balances"] == last
    assert len(list(lifecycle_events(server.log(), "projection_runner"))) == 1, "the mule restarted"


@pytest.mark.reliability
def test_every_read_sees_its_own_write_across_workers(
    uwsgi_server: StartServer, database_url: str, report: Any
) -> None:
    """1,000 write-then-read pairs, 8 at a time over 4 workers: each read asks for its write's
    position (X-Min-Position) and shows the write."""
    server = uwsgi_server(INI, env=env_for(database_url))
    accounts = [server.post("/accounts", {"owner": f"ryw {i}"}).json()["id"] for i in range(8)]

    def pair(i: int) -> tuple[bool, float]:
        account = accounts[i % 8]
        written = server.post(f"/accounts/{account}/deposits", {"amount": 1})
        assert written.status == 200, written.body
        started = time.monotonic()
        read = server.get(
            f"/balances/{account}", headers={"X-Min-Position": written.headers["x-event-position"]}
        )
        took = time.monotonic() - started
        sees = read.status == 200 and read.json()["version"] >= written.json()["version"]
        return sees, took

    results = fan_out(1000, pair, concurrency=8)
    failures = [r for r in results if not r[0]]
    assert failures == [], failures[:5]
    waits = sorted(r[1] for r in results)
    report(
        "read your writes (1,000 pairs, 8 at a time)",
        env_for(database_url),
        f"1000/1000 reads showed their write; read latency median {waits[500] * 1000:.1f} ms, "
        f"p99 {waits[990] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms",
    )


@pytest.mark.interpreters
def test_under_lazy_apps_the_runner_mule_runs_too(uwsgi_server: StartServer, sqlite_url: str) -> None:
    """uwsgi.ini switched to lazy-apps, as its comment suggests for chain reloads: the mule (the
    runner's script: a module:function mule segfaults there, unbit/uwsgi#1746) builds and projects,
    and a read asking for its write's position sees it."""
    server = uwsgi_server(INI, env=env_for(sqlite_url), options=["--processes", "2", "--lazy-apps"])
    account = server.post("/accounts", {"owner": "lazy"}).json()["id"]
    written = server.post(f"/accounts/{account}/deposits", {"amount": 7})
    read = server.get(f"/balances/{account}", headers={"X-Min-Position": written.headers["x-event-position"]})
    assert (read.status, read.json()["balance"]) == (200, 7), read.body
    log = server.log()
    assert "Segmentation Fault" not in log
    assert [e["mule"] for e in lifecycle_events(log, "build") if e.get("mule")] == ["1"]


def test_on_cassandra_the_runner_mule_idles_and_says_why(
    uwsgi_server: StartServer, cassandra_env: dict[str, str]
) -> None:
    """uwsgi.ini's projection mule on the Cassandra store (deploy/uwsgi-cassandra.ini runs no
    mule): no global order, so the mule builds nothing, connects to nothing, says why once;
    /balances is a 404 saying the read model is not kept here; the workers serve."""
    server = uwsgi_server(INI, env=cassandra_env)
    account = server.post("/accounts", {"owner": "no read side"}).json()["id"]
    answer = server.get(f"/balances/{account}")
    assert answer.status == 404
    assert "not kept on this deployment" in answer.json()["error"]
    idle = list(lifecycle_events(server.log(), "projection_runner_idle"))
    assert len(idle) == 1
    assert "UWSGI_ES_STORE=cassandra" in idle[0]["reason"]
    assert not [e for e in lifecycle_events(server.log(), "build") if e.get("mule")]


@contextmanager
def projecting(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [str(Path(sys.executable).parent / "uwsgi-es"), "project", "balances"]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_uwsgi_es_project_runs_a_projection_outside_uwsgi(sqlite_url: str, tmp_path: Path) -> None:
    """`uwsgi-es project balances` (systemd, a container): follows the feed, stops on SIGTERM."""
    env = {
        "UWSGI_ES_DATABASE_URL": sqlite_url,
        "UWSGI_ES_APPLICATION": "uwsgi_es.example.domain:BankAccounts",
    }
    log = tmp_path / "project.log"
    from uwsgi_es.example.domain import BankAccounts

    with (
        projecting(env, log) as process,
        BankAccounts.from_settings(Settings(database_url=sqlite_url)) as app,
    ):
        account = app.open_account("outside")
        app.deposit(account.id, 12)
        deadline = time.monotonic() + 15
        while read_models(sqlite_url, effects=False)[1].get("balances", 0) < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert read_models(sqlite_url, effects=False)[0] == {str(account.id): 12}
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log.read_text()
    assert "uwsgi-es project: balances stopped" in log.read_text()
