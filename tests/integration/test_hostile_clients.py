"""Hostile clients against the shipped launches (uwsgi.ini, deploy/uwsgi-postgres.ini), from outside:
slow clients, oversized bodies, too many headers, unencodable input. Each prints a figure line
(collected into docs/RELIABILITY.md by `make reliability`)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.testing import UwsgiServer, free_port

from ..support.paths import INI, PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
StartServer = Any
SLOW_CLIENTS = 64
GIB = 1 << 30


@pytest.fixture(params=["sqlite", "postgres"])
def launch(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """(ini, environment) of each shipped launch."""
    if request.param == "sqlite":
        return str(INI), {"UWSGI_ES_DATABASE_URL": request.getfixturevalue("sqlite_url")}
    url = request.getfixturevalue("postgres_url")
    return str(PROJECT / "deploy" / "uwsgi-postgres.ini"), {"UWSGI_ES_DATABASE_URL": url}


class Dribbler(threading.Thread):
    """A client sending its request one byte per second: the headers or, after them, the body. It
    notes the status of an answer it gets before it stops (a slow body is shed: 408 or 503), and,
    with ``again``, connects again after each answer, as an attacker would."""

    def __init__(
        self, server: UwsgiServer, what: str, path: str, stop: threading.Event, again: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.what, self.path, self.stop_event, self.again = server, what, path, stop, again
        self.connected = False
        self.cut_off = False  # the connection ended without an answer
        self.cut_off_after = 0.0  # seconds after it connected
        self.answers: list[int] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.dribble()
            if not self.again:
                return

    def dribble(self) -> None:
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as sock:
                self.connected = True
                if self.what == "body":
                    sock.sendall(
                        f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: 1000\r\n\r\n".encode()
                    )
                else:
                    sock.sendall(f"GET {self.path} HTTP/1.1\r\n".encode())
                sock.settimeout(0)
                while not self.stop_event.wait(1.0):
                    with contextlib.suppress(BlockingIOError):
                        answer = sock.recv(4096)
                        if answer:
                            self.answers.append(int(answer.split(b" ", 2)[1]))
                        else:
                            self.cut_off, self.cut_off_after = True, time.monotonic() - started
                        return
                    sock.sendall(b" " if self.what == "body" else b"X-Slow: 1\r\n")
        except OSError:
            self.cut_off, self.cut_off_after = True, time.monotonic() - started


def test_slow_clients_do_not_hold_the_workers(
    uwsgi_server: StartServer, launch: tuple[str, dict[str, str]], report: Any
) -> None:
    """64 clients dribbling a body and 64 dribbling headers, one byte a second, for 12 s: /health and
    deposits are answered throughout, each within 2 s; a slow body is held until it is shed, 408
    (or its connection closed): at UWSGI_ES_BODY_TIMEOUT (10 s), or after 0.05 s when it came while
    UWSGI_ES_BODY_READERS others of its worker were receiving theirs."""
    ini, env = launch
    server = uwsgi_server(ini, env=env)
    account = server.post("/accounts", {"owner": "slow"}).json()["id"]
    stop = threading.Event()
    dribblers = [Dribbler(server, "body", f"/accounts/{account}/deposits", stop) for _ in range(SLOW_CLIENTS)]
    dribblers += [Dribbler(server, "headers", "/health", stop) for _ in range(SLOW_CLIENTS)]
    for dribbler in dribblers:
        dribbler.start()
    time.sleep(2)  # every dribbler is connected and waiting
    probes: list[tuple[int, float]] = []
    deposits: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            probes.append((server.get("/health", timeout=5).status, time.monotonic() - started))
        except OSError:
            probes.append((0, time.monotonic() - started))
        if len(probes) % 4 == 0:
            deposits.append(server.post(f"/accounts/{account}/deposits", {"amount": 1}, timeout=5).status)
        time.sleep(0.25)
    stop.set()
    for dribbler in dribblers:
        dribbler.join(5)
    bodies, headers = dribblers[:SLOW_CLIENTS], dribblers[SLOW_CLIENTS:]
    assert all(d.connected for d in dribblers)
    # Shed: answered 408, or closed at the deadline when the router had already sent the next byte
    # into the shut read side; never before a deadline (0.05 s when crowded, else 10 s).
    early = [round(d.cut_off_after, 2) for d in bodies if d.cut_off and d.cut_off_after < 0.04]
    assert not early, f"slow bodies cut off before any deadline: {early}"
    assert {a for d in bodies for a in d.answers} <= {408}
    # Header blocks never reach a worker: the router drops them after http-headers-timeout (10 s).
    assert not [d for d in headers if d.answers]
    shed = sum(1 for d in bodies if d.answers or d.cut_off)
    assert {status for status, _ in probes} == {200}, probes
    slowest = max(took for _, took in probes)
    assert slowest < 2, probes
    assert set(deposits) == {200}, deposits
    assert server.get(f"/accounts/{account}").json()["balance"] == len(deposits)
    report(
        f"slow clients ({'uwsgi.ini' if ini == str(INI) else 'deploy/uwsgi-postgres.ini'})",
        env,
        f"{SLOW_CLIENTS} bodies and {SLOW_CLIENTS} header blocks dribbled at 1 byte/s for 12 s; "
        f"{shed} slow bodies shed (408 or closed, at 0.05 s when crowded or 10 s); /health answered "
        f"{len(probes)}/{len(probes)} (slowest {slowest:.3f}s), "
        f"deposits {deposits.count(200)}/{len(deposits)}",
    )


ATTACKERS = 1000


def test_a_thousand_slow_senders_reconnecting_leave_health_answering(
    uwsgi_server: StartServer, app_env: dict[str, str], report: Any
) -> None:
    """1,000 clients dribbling bodies at 1 byte/s, each connecting again as soon as it is answered,
    for 20 s (past the gevent bound of 4 x 64 held requests): slow bodies are shed (after 0.05 s
    past UWSGI_ES_BODY_READERS per worker, at UWSGI_ES_BODY_TIMEOUT otherwise), so /health keeps
    answering, at least 80 % of probes within 2 s."""
    server = uwsgi_server(INI, env=app_env)
    account = server.post("/accounts", {"owner": "siege"}).json()["id"]
    stop = threading.Event()
    attackers = [
        Dribbler(server, "body", f"/accounts/{account}/deposits", stop, again=True) for _ in range(ATTACKERS)
    ]
    for attacker in attackers:
        attacker.start()
    time.sleep(3)
    probes: list[tuple[int, float]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            probes.append((server.get("/health", timeout=2).status, time.monotonic() - started))
        except OSError:
            probes.append((0, time.monotonic() - started))
        time.sleep(0.1)
    stop.set()
    for attacker in attackers:
        attacker.join(5)
    answered = [took for status, took in probes if status == 200 and took < 2]
    shed = [a for d in attackers for a in d.answers]
    closed = sum(1 for d in attackers if d.cut_off)
    log = server.log()
    assert len(answered) >= 0.8 * len(probes), f"/health {len(answered)}/{len(probes)}"
    assert set(shed) <= {408}, set(shed)
    assert "HARAKIRI" not in log
    assert server.get(f"/accounts/{account}").json()["balance"] == 0
    answered_sorted = sorted(answered)
    report(
        "1,000 slow senders reconnecting (uwsgi.ini)",
        app_env,
        f"{ATTACKERS} clients dribbling bodies at 1 byte/s and reconnecting for 20 s: /health "
        f"answered {len(answered)}/{len(probes)} within 2 s (median "
        f"{answered_sorted[len(answered_sorted) // 2] * 1000:.0f} ms); {len(shed)} slow bodies "
        f"answered 408 (and attackers' last connections closed: {closed}); no harakiri",
    )


def exchange(server: UwsgiServer, data: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``data``, then read until the server closes: (answer, seconds to the first byte)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(data)
        answer = sock.recv(65536)
        first = time.monotonic() - started
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer, first


def test_oversized_bodies_are_refused_before_a_byte_is_read(
    uwsgi_server: StartServer, app_env: dict[str, str], report: Any
) -> None:
    """A declared 1 GiB, and 2^63, are answered 413 while the client has sent no byte of the body:
    nothing is read, buffered or spooled before the refusal."""
    server = uwsgi_server(INI, env=app_env, options=["--processes", "2"])
    account = server.post("/accounts", {"owner": "big"}).json()["id"]
    figures = []
    for length in (GIB, 2**63):
        headers = (
            f"POST /accounts/{account}/deposits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        answer, took = exchange(server, headers.encode())
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"the limit is 65536" in answer
        assert took < 1
        figures.append(f"Content-Length {length}: 413 after {took * 1000:.0f} ms with 0 body bytes sent")
    assert server.get(f"/accounts/{account}").json()["balance"] == 0
    report("oversized bodies", app_env, "; ".join(figures) + "; largest body read before a 413: 0 bytes")


def test_many_headers_and_long_urls_up_to_the_documented_limits_are_answered(
    uwsgi_server: StartServer, app_env: dict[str, str], report: Any
) -> None:
    """uwsgi.ini documents its limits (the uwsgi packet's 64 KiB of variables): 400 headers and a
    30 KB URL are answered; beyond the packet's size uWSGI drops the request, and keeps serving."""
    server = uwsgi_server(INI, env=app_env, options=["--processes", "2"])
    headers = "".join(f"X-Header-{n}: value\r\n" for n in range(400))
    answer, _ = exchange(
        server, f"GET /health HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    answer, _ = exchange(
        server, f"GET /{'a' * 30_000} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
    assert b"no route for" in answer
    answer, _ = exchange(
        server, f"GET /{'a' * 40_000} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert answer == b"", answer[:100]  # the documented limit: dropped, no answer
    assert server.get("/health").status == 200
    report(
        "request size limits",
        app_env,
        "400 headers answered 200; a 30 KB URL answered 404; a 40 KB URL dropped without an answer "
        "(the documented limit), the server serving on",
    )


def test_unencodable_client_input_is_still_answered(
    uwsgi_server: StartServer, app_env: dict[str, str]
) -> None:
    """A lone surrogate in an unknown key: a 400 naming it, escaped; before, uWSGI sent nothing."""
    server = uwsgi_server(INI, env=app_env, options=["--processes", "1"])
    account = server.post("/accounts", {"owner": "surrogate"}).json()["id"]
    body = b'{"amount": 1, "\\ud800": 1}'
    result = server.request(
        "POST", f"/accounts/{account}/deposits", body, headers={"Content-Type": "application/json"}
    )
    assert result.status == 400
    assert result.json()["error"].startswith("unknown field(s): '\\ud800'")
    assert server.get(f"/accounts/{account}").json()["balance"] == 0


def test_no_secret_or_deployment_detail_reaches_a_client_or_the_log(
    uwsgi_server: StartServer, report: Any
) -> None:
    """An unreachable PostgreSQL whose URL holds passwords in two places. Anonymous clients (here:
    UWSGI_ES_OPERATOR_NETWORKS=none) get a stable reason only: no user, host, port, database, path,
    driver message or pid; the log names the store, with every password masked."""
    secret = "s3cr3t-Pa55"  # noqa: S105 (a fake password the test looks for)
    url = f"postgresql+psycopg://bankuser:{secret}@127.0.0.1:{free_port()}/bankdb?sslpassword={secret}x"
    env = {
        "UWSGI_ES_DATABASE_URL": url,
        "UWSGI_ES_CONNECT_TIMEOUT": "1",
        "UWSGI_ES_OPERATOR_NETWORKS": "none",
    }
    server = uwsgi_server(INI, env=env, options=["--processes", "2"], wait_for="health")
    answers = [
        server.request(method, path, body, headers={"Content-Type": "application/json"})
        for method, path, body in [
            ("GET", "/ready", None),
            ("GET", "/worker", None),
            ("GET", f"/accounts/{'0' * 32}", None),
            ("POST", "/accounts", b'{"owner": "x"}'),
            ("GET", "/health", None),
        ]
    ]
    assert [a.status for a in answers] == [503, 404, 503, 503, 200]
    bodies = b" ".join(a.body for a in answers).decode()
    for detail in (secret, "bankuser", "127.0.0.1", "bankdb", "psycopg", str(server.pid), "sqlite", "/"):
        assert detail not in bodies.replace("no route for '/worker'", ""), detail
    assert answers[0].json() == {"error": "the event store is unavailable"}
    log = server.log()
    assert secret not in log
    assert "postgresql+psycopg://bankuser:***@127.0.0.1" in log
    report(
        "secrets and 503 bodies",
        {"UWSGI_ES_DATABASE_URL": "postgresql+psycopg"},
        "a password in the URL's userinfo and in ?sslpassword=: in no response, no log line (masked as ***); "
        "anonymous 503 bodies are one stable sentence, /worker is 404 to them",
    )


def test_the_routers_socket_to_the_workers_is_closed_to_other_local_users(
    uwsgi_server: StartServer, app_env: dict[str, str], tmp_path: Any
) -> None:
    """uwsgi.ini's HTTP router talks to the workers over a unix socket only uWSGI's user may open:
    on the TCP socket `http` makes by itself (127.0.0.1, any port), any local process could send a
    uwsgi packet claiming REMOTE_ADDR 10.1.2.3 and pass for an operator. The instance listens on TCP
    at its HTTP address only, and another user cannot connect to the workers' socket."""
    env = {**app_env, "UWSGI_ES_OPERATOR_NETWORKS": "10.0.0.0/8"}
    # (the harness sees each worker's readiness only as an operator: wait for /health instead)
    server = uwsgi_server(INI, env=env, options=["--processes", "2"], wait_for="health")
    assert server.get("/worker").status == 404, "127.0.0.1 is not an operator here"
    [bound] = re.findall(r"uwsgi socket 0 bound to (\w+) address (\S+) fd", server.log())
    assert bound[0] == "UNIX", bound
    path = PROJECT / bound[1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listening = {port for _, port in _tcp_listeners(server.pid)}
    # its HTTP address, and the stats server the harness adds (--stats)
    assert listening == {server.port, server.stats_port}, f"TCP ports the instance listens on: {listening}"
    as_nobody = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, socket, sys; os.setgid(65534); os.setuid(65534); "
            "socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert as_nobody.returncode != 0
    assert "PermissionError" in as_nobody.stderr, as_nobody.stderr


def _tcp_listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state held by ``pid`` (the master holds every
    socket the instance binds)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add((address, int(port, 16)))
    return found
