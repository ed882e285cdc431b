"""The benchmark's comparison apps, kept as lean as honest code allows.

They share one WSGI skeleton (``account_routes``), so the anchors route and parse requests alike
and differ only in how they store and read deposits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ROUTE = re.compile(r"^/accounts/([0-9a-f-]{36})(/deposits)?$")


def respond(start_response: Callable[..., Any], status: str, payload: Any) -> Iterable[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def account_routes(
    deposit: Callable[[UUID, int], tuple[str, Any]],
    read: Callable[[UUID], Any],
    open_account: Callable[[], Any] | None = None,
) -> WsgiApp:
    """GET /health, POST /accounts (when ``open_account`` is given), POST /accounts/{id}/deposits
    (``deposit`` returns status and body) and GET /accounts/{id} (``read`` returns the body)."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        post = environ["REQUEST_METHOD"] == "POST"
        if path == "/health":
            return respond(start_response, "200 OK", {"status": "ok"})
        if open_account is not None and path == "/accounts" and post:
            return respond(start_response, "201 Created", open_account())
        match = ROUTE.match(path)
        if not match:
            return respond(start_response, "404 Not Found", {"error": "no route"})
        account = UUID(match.group(1))
        if match.group(2) and post:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            amount = json.loads(environ["wsgi.input"].read(length))["amount"]
            return respond(start_response, *deposit(account, amount))
        return respond(start_response, "200 OK", read(account))

    return application
