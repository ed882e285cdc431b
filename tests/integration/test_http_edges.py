"""Malformed HTTP on a real uWSGI: every answer is a 4xx naming the problem, never a 5xx."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from uwsgi_es.testing import UwsgiServer

from ..support.paths import INI

pytestmark = pytest.mark.integration


def raw_exchange(server: UwsgiServer, data: bytes, timeout: float = 10.0) -> tuple[float, bytes]:
    """Send bytes as they are; return (seconds until the connection ended, the whole answer)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return time.monotonic() - started, answer


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def served(uwsgi_server: Any, app_env: dict[str, str]) -> tuple[UwsgiServer, str]:
    server = uwsgi_server(INI, env=app_env, options=["--processes", "2"])
    return server, server.post("/accounts", {"owner": "edge"}).json()["id"]


JSON = {"Content-Type": "application/json"}


def test_malformed_http_gets_4xx_and_changes_nothing(served: tuple[UwsgiServer, str]) -> None:
    server, account = served
    deposits = f"/accounts/{account}/deposits"
    cases = [
        (
            "body over the limit",
            request("POST", deposits, {**JSON, "Content-Length": "1000000"}, b"x" * 1_000_000),
            413,
        ),
        (
            "chunked body",
            request("POST", deposits, {**JSON, "Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n"),
            411,
        ),
        ("negative length", request("POST", deposits, {**JSON, "Content-Length": "-5"}, b"{}"), 400),
        ("10 KB path", request("GET", "/" + "a" * 10_000, {}), 404),
        ("NUL in the id", request("GET", "/accounts/%00", {}), 400),
        ("unknown method", request("BREW", "/health", {}), 405),
        ("path traversal", request("GET", "/../../etc/passwd", {}), 404),
    ]
    for what, data, expected in cases:
        _, answer = raw_exchange(server, data)
        assert status_of(answer) == expected, (what, answer[:300])
        assert b'{"error":' in answer, what
    assert server.get(f"/accounts/{account}").json()["version"] == 1
    assert "Traceback" not in server.log()


def test_a_body_shorter_than_its_length_gets_a_400_after_the_socket_timeout(
    uwsgi_server: Any, app_env: dict[str, str]
) -> None:
    """The worker waits socket-timeout for the missing bytes (in one async core, serving others
    meanwhile), then answers 400: no 5xx, no hang, nothing stored."""
    server = uwsgi_server(INI, env=app_env, options=["--processes", "1", "--socket-timeout", "2"])
    account = server.post("/accounts", {"owner": "edge"}).json()["id"]
    data = request(
        "POST", f"/accounts/{account}/deposits", {**JSON, "Content-Length": "100"}, b'{"amount": 5}'
    )
    took, answer = raw_exchange(server, data)
    assert status_of(answer) == 400
    assert b"fewer bytes than its Content-Length" in answer
    assert 2 <= took < 5
    assert server.get(f"/accounts/{account}").json()["balance"] == 0
