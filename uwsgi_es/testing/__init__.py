"""Real servers for tests: uWSGI (``UwsgiServer``), uvicorn, granian and gunicorn's ASGI worker
(``AsgiServer``), and a throwaway PostgreSQL (``PostgresServer``).

Shipped in the package so users can test their own deployments the way we test ours; the pytest
fixture ``uwsgi_server`` (``uwsgi_es.pytest_plugin``) wraps ``UwsgiServer``; ``lifecycle_events``
reads the structured build/close events out of a uWSGI log. Standard library only.

The rule: shipped to users, so it imports only the standard library, ``runtime`` and ``errors``,
never the stores, the core or a framework; it starts real servers and never mocks one.
"""

from __future__ import annotations

from uwsgi_es.runtime.log import events_in as lifecycle_events
from uwsgi_es.testing.asgi_servers import AsgiServer
from uwsgi_es.testing.postgres import PostgresServer, PostgresUnavailableError
from uwsgi_es.testing.processes import free_port
from uwsgi_es.testing.uwsgi_server import HttpResult, UwsgiServer, UwsgiStartError, find_uwsgi

__all__ = [
    "AsgiServer",
    "HttpResult",
    "PostgresServer",
    "PostgresUnavailableError",
    "UwsgiServer",
    "UwsgiStartError",
    "find_uwsgi",
    "free_port",
    "lifecycle_events",
]
