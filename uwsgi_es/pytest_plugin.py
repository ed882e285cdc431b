"""The ``uwsgi_server`` pytest fixture, registered automatically when uwsgi_es is installed.

    def test_one_application_per_worker(uwsgi_server):
        server = uwsgi_server("uwsgi.ini", options=["--processes", "4"])
        assert server.get("/worker").json()["constructions"] == 1

Each call starts a real uWSGI (see ``uwsgi_es.testing.UwsgiServer``), ready when every worker
answers ``/ready``; all are stopped when the test ends. When a test fails, the log of every uWSGI it
started is added to the failure report, so the cause is on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.testing import UwsgiServer

_SERVERS = pytest.StashKey[list[UwsgiServer]]()

StartServer = Callable[..., UwsgiServer]


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
