"""Real servers for tests: uWSGI (``UwsgiServer``) and a throwaway PostgreSQL (``PostgresServer``).

Shipped in the package so users can test their own deployments the way we test ours; the pytest
fixture ``uwsgi_server`` (``uwsgi_es.pytest_plugin``) wraps ``UwsgiServer``. Standard library only.
"""

from __future__ import annotations

from uwsgi_es.testing.postgres import PostgresServer, PostgresUnavailableError
from uwsgi_es.testing.uwsgi_server import HttpResult, UwsgiServer, UwsgiStartError, find_uwsgi, free_port

__all__ = [
    "HttpResult",
    "PostgresServer",
    "PostgresUnavailableError",
    "UwsgiServer",
    "UwsgiStartError",
    "find_uwsgi",
    "free_port",
]
