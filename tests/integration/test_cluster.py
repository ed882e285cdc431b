"""Beyond one machine: a real three-node Cassandra cluster (127.0.0.1-3, one data centre,
replication factor 3, LOCAL_QUORUM / LOCAL_SERIAL) under two uWSGI instances ("hosts": separate
masters and ports), and nodes killed, stopped together and paused under load. And PostgreSQL
with two instances, each tailing the feed. Figures go to docs/RELIABILITY.md (``make reliability``)."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy
from sqlalchemy import create_engine, func, select

from uwsgi_es.errors import QuorumLostError
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store
from uwsgi_es.stores.sqlalchemy.schema import records_table
from uwsgi_es.testing import UwsgiServer
from uwsgi_es.testing.cassandra_cluster import DATA_CENTRE, HOSTS, CassandraCluster

from ..support.checks import all_events, move_money_concurrently
from ..support.load import DepositLoad, Outcome
from ..support.paths import CASSANDRA_INI, INI

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.reliability]
StartServer = Any
_keyspaces = itertools.count()
TABLE = "integer_sequenced_items"


class Hosts:
    """Two uWSGI instances seen as one client: requests alternate between them."""

    def __init__(self, *servers: UwsgiServer) -> None:
        self.servers = servers
        self._next = itertools.cycle(servers)
        self._lock = threading.Lock()

    def pick(self) -> UwsgiServer:
        with self._lock:
            return next(self._next)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> Any:
        return self.pick().post(path, json_body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.pick().get(path, **kwargs)

    def log(self) -> str:
        return "\n".join(server.log() for server in self.servers)


@pytest.fixture(scope="module")
def cassandra_cluster() -> Iterator[CassandraCluster]:
    """Three nodes for this module only (not the plugin's session-wide one): three idle JVMs left
    running would slow every later test on this 2-core machine."""
    with CassandraCluster() as started:
        yield started


@pytest.fixture
def cluster(cassandra_cluster: CassandraCluster) -> CassandraCluster:
    """This module's cluster, whole before each test (a node an earlier test killed or paused is
    brought back first: after the last, nothing is restarted only to be stopped)."""
    for index, node in enumerate(cassandra_cluster.nodes):
        if node.process is not None and node.process.poll() is None:
            cassandra_cluster.resume(index)
    down = [
        i
        for i, node in enumerate(cassandra_cluster.nodes)
        if node.process is None or node.process.poll() is not None
    ]
    for index in down:
        cassandra_cluster.nodes[index].start_process()
    if down:
        cassandra_cluster.wait_until_up()
    return cassandra_cluster


@pytest.fixture
def cluster_env(cluster: CassandraCluster) -> dict[str, str]:
    """A new keyspace replicated 3 times in the data centre, its tables made (as `uwsgi-es migrate`)."""
    env = {
        "UWSGI_ES_STORE": "cassandra",
        "UWSGI_ES_CASSANDRA_HOSTS": cluster.contact_points,
        "UWSGI_ES_CASSANDRA_PORT": str(cluster.native_port),
        "UWSGI_ES_CASSANDRA_KEYSPACE": f"cluster_{os.getpid()}_{next(_keyspaces)}",
        "UWSGI_ES_CASSANDRA_REPLICATION": f"NetworkTopologyStrategy:{DATA_CENTRE}=3",
        "UWSGI_ES_CASSANDRA_REQUEST_TIMEOUT": "5",
    }
    store = create_record_store(Settings.from_environ(env))
    store.create_schema()
    store.close()
    return env


@pytest.fixture
def hosts(uwsgi_server: StartServer, cluster_env: dict[str, str]) -> Hosts:
    """deploy/uwsgi-cassandra.ini twice (2 workers each: this machine has 2 cores for everything)."""
    return Hosts(
        *(uwsgi_server(CASSANDRA_INI, env=cluster_env, options=["--processes", "2"]) for _ in range(2))
    )


def rows_on(node: str, port: int, keyspace: str) -> dict[tuple[UUID, int], bytes]:
    """Every event row, read through ``node`` alone at consistency ONE."""
    only = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy([node]), consistency_level=ConsistencyLevel.ONE
    )
    cluster = Cluster([node], port=port, protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: only})
    try:
        session = cluster.connect()
        rows = session.execute(f"SELECT originator_id, originator_version, state FROM {keyspace}.{TABLE}")  # noqa: S608
        return {(row.originator_id, row.originator_version): row.state for row in rows}
    finally:
        cluster.shutdown()


def balances_match(load: DepositLoad) -> None:
    """Each account's balance is the sum of the deposits stored in it."""
    for account in load.account_ids:
        events = all_events(load.server, account)
        stored = sum(e["state"]["amount"] for e in events[1:])
        assert load.server.get(f"/accounts/{account}").json()["balance"] == stored


def latencies(outcomes: list[Outcome]) -> str:
    took = sorted(o.elapsed for o in outcomes)
    return (
        f"median {statistics.median(took) * 1000:.0f} ms, p99 {took[int(len(took) * 0.99)] * 1000:.0f} ms, "
        f"max {took[-1] * 1000:.0f} ms"
    )


def fault_under_load(
    hosts: Hosts,
    fault: Callable[[], None],
    *,
    seconds: float,
    recover: Callable[[], None] | None = None,
    then: float = 0.0,
) -> tuple[DepositLoad, float, float]:
    """8 clients depositing through both hosts; after 3 s ``fault()``, ``seconds`` later
    ``recover()``, ``then`` seconds more of load. Returns the load and when the fault began and ended."""
    load = DepositLoad(hosts, threads=8, timeout=15).start()  # type: ignore[arg-type]
    time.sleep(3)
    began = time.monotonic()
    fault()
    time.sleep(seconds)
    if recover is not None:
        recover()
    ended = time.monotonic()
    time.sleep(then)
    load.stop()
    return load, began, ended


def test_two_hosts_move_money_on_shared_accounts(
    hosts: Hosts, cluster_env: dict[str, str], report: Any
) -> None:
    """Deposits and withdrawals on 3 shared accounts from both instances at once: per-aggregate
    linearisability across hosts (LOCAL_SERIAL lightweight transactions): every acknowledged
    operation stored once, versions 1..n, no balance below zero, balances as acknowledged."""
    figures = move_money_concurrently(hosts, operations=300, concurrency=16)  # type: ignore[arg-type]
    report("two hosts, three nodes: concurrent deposits and withdrawals", cluster_env, figures)


def test_a_node_killed_under_load_loses_nothing_and_rejoins_consistent(
    hosts: Hosts, cluster: CassandraCluster, cluster_env: dict[str, str], report: Any
) -> None:
    load, killed_at, _ = fault_under_load(hosts, lambda: cluster.kill(2), seconds=6)
    audit = load.audit()
    audit.check()
    balances_match(load)
    # The service continues: writes sent in the load's last 2 s (4 s after the kill) were
    # acknowledged. The rates before and after are reported, not judged: on this machine a
    # killed node slows Paxos rounds, which then need both remaining replicas, by 2 to 7 times.
    stopped = max(o.finished - o.elapsed for o in load.outcomes)
    late = [o for o in load.outcomes if o.status == 200 and o.finished - o.elapsed > stopped - 2]
    assert late, "no write sent in the last 2 s of the load was acknowledged"
    started = min(o.finished - o.elapsed for o in load.outcomes)
    before = sum(1 for o in load.outcomes if o.status == 200 and o.finished <= killed_at) / (
        killed_at - started
    )
    after = sum(1 for o in load.outcomes if o.status == 200 and o.finished - o.elapsed > killed_at + 1) / (
        stopped - killed_at - 1
    )
    failed = [o for o in load.outcomes if o.status not in {200, 409}]
    assert all(o.finished - o.elapsed <= killed_at + 2 for o in failed), [
        (o.status, o.error[:100]) for o in failed if o.finished - o.elapsed > killed_at + 2
    ][:3]

    restarted = time.monotonic()
    cluster.restart(2)
    rejoined = time.monotonic() - restarted
    keyspace = cluster_env["UWSGI_ES_CASSANDRA_KEYSPACE"]
    repaired = cluster.repair(keyspace)
    replicas = {node: rows_on(node, cluster.native_port, keyspace) for node in HOSTS}
    reference = replicas[HOSTS[0]]
    assert len(reference) == sum(len(all_events(hosts, a)) for a in load.account_ids)  # type: ignore[arg-type]
    for node, rows in replicas.items():
        assert rows == reference, f"{node} differs: {len(rows)} rows against {len(reference)}"
    report(
        "one of three nodes SIGKILLed under load (two hosts)",
        cluster_env,
        f"{audit.line()}; {len(failed)} failed, all in flight at the kill; {before:.0f} acknowledged "
        f"writes/s before the kill, {after:.0f} from 1 s after; "
        f"latency {latencies(load.outcomes)}; "
        f"the node rejoined (all UN) {rejoined:.1f}s after its restart; after a full repair "
        f"({repaired:.1f}s) all three "
        f"replicas, each read alone at ONE, hold the same {len(reference)} rows",
    )


def test_a_paused_node_loses_nothing_and_latency_stays_bounded(
    hosts: Hosts, cluster: CassandraCluster, cluster_env: dict[str, str], report: Any
) -> None:
    """SIGSTOP: the node's connections stay open and silent. Writes it coordinates wait for the
    request timeout (5 s here) and are settled by sending them again; reads it would answer are
    sent to another replica after the speculative delay (0.5 s), so no read fails. (A worker waiting
    on Cassandra holds the other requests it accepted: they wait with it.)"""
    accounts = [hosts.post("/accounts", {"owner": f"read {i}"}).json()["id"] for i in range(6)]
    with Reader(hosts, accounts) as reader:
        load, paused_at, resumed_at = fault_under_load(
            hosts, lambda: cluster.pause(1), seconds=8, recover=lambda: cluster.resume(1), then=3
        )
    audit = load.audit()
    audit.check()
    balances_match(load)
    during = [o for o in load.outcomes if paused_at <= o.finished <= resumed_at]
    assert [o for o in during if o.status == 200], "nothing succeeded while the node was paused"
    slowest = max(o.elapsed for o in load.outcomes)
    assert slowest < 12, f"a request took {slowest:.1f}s"
    # A read that overlapped the pause; it may have waited in uWSGI's queue behind stalled writes.
    reads_during = [(s, t - b) for s, b, t in reader.answers if b <= resumed_at and t >= paused_at]
    assert reads_during, "no read was in flight while the node was paused"
    assert {s for s, _, _ in reader.answers} == {200}, Counter(s for s, _, _ in reader.answers)
    read_times = sorted(e for _, e in reads_during)
    report(
        "one of three nodes paused (SIGSTOP) for 8 s under load (two hosts)",
        cluster_env,
        f"{audit.line()}; while paused: {sum(o.status == 200 for o in during)} acknowledged, latency "
        f"{latencies(during)}; overall {latencies(load.outcomes)}; a reader alongside: "
        f"{len(reader.answers)} reads all 200, {len(read_times)} during the pause (median "
        f"{statistics.median(read_times) * 1000:.0f} ms, max {read_times[-1] * 1000:.0f} ms)",
    )


def test_two_nodes_down_writes_answer_503_naming_the_quorum_then_recover(
    hosts: Hosts, cluster: CassandraCluster, cluster_env: dict[str, str], report: Any
) -> None:
    account = hosts.post("/accounts", {"owner": "quorum"}).json()["id"]
    amounts = itertools.count(1)
    answers: list[tuple[int, int, str, float]] = []  # (amount, status, error, time)

    slowest = [0.0]

    def deposit() -> int:
        amount = next(amounts)
        result = hosts.post(f"/accounts/{account}/deposits", {"amount": amount}, timeout=20)
        error = json.loads(result.body).get("error", "") if result.status != 200 else ""
        answers.append((amount, result.status, error, time.monotonic()))
        slowest[0] = max(slowest[0], result.elapsed)
        return result.status

    assert deposit() == 200
    cluster.kill(1)
    cluster.kill(2)
    down_at = time.monotonic()
    quorum_refusals = 0
    while quorum_refusals < 20:
        assert time.monotonic() - down_at < 60, answers[-5:]
        if deposit() == 503 and answers[-1][2] == QuorumLostError.public_reason:
            quorum_refusals += 1
    noticed = next(t for _, s, e, t in answers if e == QuorumLostError.public_reason) - down_at

    cluster.nodes[1].start_process()  # one node back: a quorum again, without touching uWSGI
    back_at = time.monotonic()
    while deposit() != 200:
        assert time.monotonic() - back_at < 60, answers[-5:]
    recovered = time.monotonic() - back_at

    stored = Counter(e["state"]["amount"] for e in all_events(hosts, account)[1:])  # type: ignore[arg-type]
    acknowledged = {a for a, s, _, _ in answers if s == 200}
    refused = {a for a, s, e, _ in answers if s == 503 and e == QuorumLostError.public_reason}
    assert acknowledged <= set(stored)
    assert set(stored.values()) == {1}
    assert not refused & set(stored), "a write refused for lost quorum was stored"
    statuses = Counter(s for _, s, _, _ in answers)
    assert statuses[500] == 0
    report(
        "two of three nodes down (two hosts)",
        cluster_env,
        f"statuses {dict(sorted(statuses.items()))}; 503 naming the lost quorum from {noticed:.1f}s after "
        f"the kill; none of the {len(refused)} refused writes stored, all {len(acknowledged)} "
        f"acknowledged stored once; slowest answer {slowest[0]:.1f}s (the driver's request timeout is "
        f"5 s); writes succeeded again {recovered:.1f}s after one node's restart (no uWSGI restart)",
    )


class Reader:
    """A client reading accounts through both hosts until stopped: (status, sent, answered)."""

    def __init__(self, hosts: Hosts, accounts: list[str]) -> None:
        self.hosts, self.accounts = hosts, accounts
        self.answers: list[tuple[int, float, float]] = []
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Reader:
        self._running.set()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running.clear()
        self._thread.join(30)

    def _read(self) -> None:
        for account in itertools.cycle(self.accounts):
            if not self._running.is_set():
                return
            started = time.monotonic()
            result = self.hosts.get(f"/accounts/{account}", timeout=20)
            self.answers.append((result.status, started, time.monotonic()))


def test_postgres_two_instances_tailing_see_every_event_once_in_one_order(
    uwsgi_server: StartServer, postgres_url: str, report: Any
) -> None:
    """Two uWSGI instances on one PostgreSQL, writers on both, a reader tailing GET /events on
    each throughout: both see every event exactly once, in the same order."""
    env = {"UWSGI_ES_DATABASE_URL": postgres_url}
    first, second = (uwsgi_server(INI, env=env, options=["--processes", "2"]) for _ in range(2))
    last: list[int] = []  # the last stored position, once the writers have stopped
    seen: dict[str, list[int]] = {"first": [], "second": []}

    def tail(name: str, server: UwsgiServer) -> None:
        """Until the reader has reached the last stored event (an empty page proves nothing: the
        feed shows events only below the oldest transaction still writing, e.g. the mule's)."""
        after, deadline = 0, time.monotonic() + 120
        while not (last and after >= last[0]) and time.monotonic() < deadline:
            page = server.get(f"/events?after={after}&limit=500").json()
            seen[name] += [e["id"] for e in page["events"]]
            after = page["next_after"]
            if not page["events"]:
                time.sleep(0.02)

    readers = [threading.Thread(target=tail, args=item) for item in (("first", first), ("second", second))]
    for reader in readers:
        reader.start()
    load = DepositLoad(Hosts(first, second), threads=8, timeout=15).start()  # type: ignore[arg-type]
    time.sleep(5)
    load.stop()
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        last.append(int(connection.execute(select(func.max(records_table.c.id))).scalar_one()))
    engine.dispose()
    for reader in readers:
        reader.join(130)
    audit = load.audit()
    audit.check()
    assert seen["first"] == seen["second"]
    assert len(seen["first"]) == len(set(seen["first"]))
    assert seen["first"] == sorted(seen["first"])
    assert len(seen["first"]) == audit.acknowledged + len(load.account_ids) + audit.stored_after_failure
    report(
        "two instances on one PostgreSQL, each tailing /events",
        env,
        f"{audit.line()}; both readers saw the same {len(seen['first'])} events, each once, in one order",
    )
