"""The bank API's WSGI test client, shared by the web tests."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from uwsgi_es.wsgi import application


def from_address(app: Any, address: str) -> Any:
    """``app`` as seen from a client at ``address`` (Werkzeug's test client sets no REMOTE_ADDR)."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        environ["REMOTE_ADDR"] = address
        return app(environ, start_response)

    return wrapped


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> Client:
    """A client on this host: an operator, by the default UWSGI_ES_OPERATOR_NETWORKS."""
    monkeypatch.setenv("UWSGI_ES_DATABASE_URL", sqlite_url)
    return Client(from_address(application, "127.0.0.1"))
