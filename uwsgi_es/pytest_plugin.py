"""The ``uwsgi_server`` and ``cassandra_cluster`` pytest fixtures, registered automatically when
uwsgi_es is installed.

    def test_one_application_per_worker(uwsgi_server):
        server = uwsgi_server("uwsgi.ini", options=["--processes", "4"])
        assert server.get("/worker").json()["constructions"] == 1

Each call starts a real uWSGI (see ``uwsgi_es.testing.UwsgiServer``), ready when every worker
answers ``/ready``; all are stopped when the test ends. When a test fails, the log of every uWSGI it
started is added to the failure report, so the cause is on screen.

``cassandra_cluster`` is three real Cassandra nodes on 127.0.0.1-3 for the whole session
(``uwsgi_es.testing.cassandra_cluster``; needs java 17 and mvn), started on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from uwsgi_es.testing import UwsgiServer

if TYPE_CHECKING:
    from uwsgi_es.testing.cassandra_cluster import CassandraCluster

_SERVERS = pytest.StashKey[list[UwsgiServer]]()

StartServer = Callable[..., UwsgiServer]


@pytest.fixture(scope="session")
def cassandra_cluster() -> Iterator[CassandraCluster]:
    """Three Cassandra nodes on 127.0.0.1-3, all UN; stopped (and their data removed) at the end."""
    from uwsgi_es.testing.cassandra_cluster import CassandraCluster  # the driver only when asked for

    with CassandraCluster() as cluster:
        print(f"Cassandra cluster UN after {cluster.startup_seconds:.1f}s, RSS {cluster.rss_megabytes()} MB")
        yield cluster


@pytest.fixture
def uwsgi_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartServer]:
    """A factory: ``uwsgi_server(ini=None, **UwsgiServer options)`` returns a started server."""
    servers = request.node.stash.setdefault(_SERVERS, [])

    def start(ini: str | Path | None = None, **options: Any) -> UwsgiServer:
        options.setdefault("log_dir", tmp_path / f"uwsgi-{len(servers)}")
        server = UwsgiServer(ini, **options)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        servers: list[UwsgiServer] = item.stash[_SERVERS] if _SERVERS in item.stash else []  # noqa: SIM401 (Stash.get is typed too narrowly for mypy)
        for number, server in enumerate(servers):
            report.sections.append((f"uWSGI log {number} ({server.log_path})", server.log_tail(200)))
