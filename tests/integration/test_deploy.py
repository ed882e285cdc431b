"""deploy/ for real servers: the systemd unit checked by systemd-analyze, and the production shape
(nginx speaking the uwsgi protocol to uWSGI on a unix socket, the stats server on another) run with
a real nginx from Debian's packages and a real uWSGI."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.testing.processes import free_port

from ..support.paths import PROJECT

pytestmark = pytest.mark.integration
DEPLOY = PROJECT / "deploy"
BIN = Path(sys.executable).parent


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Type=notify (uWSGI speaks sd_notify), SIGTERM with die-on-term, a restart policy and the
    hardening options; `systemd-analyze verify` accepts it with this checkout's paths."""
    text = (DEPLOY / "uwsgi-es.service").read_text()
    lines = set(text.splitlines())
    for directive in (
        "Type=notify",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "RuntimeDirectory=uwsgi-es",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ):
        assert directive in lines, f"the unit lost {directive}"
    assert "die-on-term = true" in (DEPLOY / "uwsgi-nginx.ini").read_text()
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    unit = tmp_path / "uwsgi-es.service"
    unit.write_text(
        text.replace("/srv/uwsgi-es/.venv/bin/", f"{BIN}/").replace("/srv/uwsgi-es", str(PROJECT))
    )
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert not verified.stderr.strip(), verified.stderr


def get(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    method = "POST" if body else "GET"
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (http://127.0.0.1 only)
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), json.loads(refused.read())


class Nginx:
    """A real nginx serving deploy/nginx-uwsgi-es.conf as shipped, but for its socket path and
    listen address, in front of the uWSGI socket at ``socket_path``."""

    def __init__(self, folder: Path, socket_path: Path) -> None:
        self.folder, self.socket_path = folder, socket_path
        self.port = free_port()
        self.log = folder / "nginx-error.log"
        self.output = (folder / "nginx.out").open("wb")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        assert Path(nginx).exists(), "nginx is missing: make test installs it (apt-get install nginx-light)"
        site = (DEPLOY / "nginx-uwsgi-es.conf").read_text()
        assert "unix:/run/uwsgi-es/uwsgi.sock" in site
        site = site.replace("unix:/run/uwsgi-es/uwsgi.sock", f"unix:{self.socket_path}")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        (self.folder / "site.conf").write_text(site)
        shutil.copy("/etc/nginx/uwsgi_params", self.folder / "uwsgi_params")
        temp = {kind: self.folder / kind for kind in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (self.folder / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"pid {self.folder}/nginx.pid;\nerror_log {self.log};\nworker_processes 1;\n"
            + "events { worker_connections 256; }\n"
            + "http {\n  access_log off;\n"
            + f"  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
            + f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
            + f"  scgi_temp_path {temp['scgi']};\n  include {self.folder}/site.conf;\n}}\n"
        )
        self.process = subprocess.Popen(
            [nginx, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=self.output,
        )
        deadline = time.monotonic() + 20
        while get_status(f"http://127.0.0.1:{self.port}/health") != 200:
            assert self.process.poll() is None, (self.folder / "nginx.out").read_text() + self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.process, signal.SIGQUIT)
        self.output.close()


def stop_process(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Deployment:
    """uWSGI from deploy/uwsgi-nginx.ini (unix sockets in a runtime directory, plus an HTTP
    socket for the test to reach it directly) and nginx from deploy/nginx-uwsgi-es.conf."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.runtime = folder / "run"
        self.runtime.mkdir()
        self.direct_port = free_port()
        self.uwsgi_log = folder / "uwsgi.log"
        command = [
            str(BIN / "uwsgi"),
            "--ini",
            str(DEPLOY / "uwsgi-nginx.ini"),
            "--http-socket",
            f"127.0.0.1:{self.direct_port}",
            "--chmod-socket=666",  # nginx's workers run as another user here
        ]
        self.output = self.uwsgi_log.open("wb")
        self.uwsgi = subprocess.Popen(
            command,
            env={**os.environ, **env, "RUNTIME_DIRECTORY": str(self.runtime)},
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        self.nginx = Nginx(folder, self.runtime / "uwsgi.sock")
        self.nginx_port = self.nginx.port

    def start(self) -> None:
        deadline = time.monotonic() + 60
        while get_status(f"http://127.0.0.1:{self.direct_port}/ready") != 200:
            assert self.uwsgi.poll() is None, self.uwsgi_log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.uwsgi_log.read_text()[-3000:]
            time.sleep(0.2)
        self.nginx.start()

    def stop(self) -> None:
        self.nginx.stop()
        stop_process(self.uwsgi, signal.SIGTERM)
        self.output.close()


def get_status(url: str) -> int | None:
    try:
        return get(url)[0]
    except (OSError, ValueError):
        return None


@pytest.fixture
def deployment(tmp_path: Path, app_env: dict[str, str]) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path, app_env)
    try:
        deployed.start()
        yield deployed
    finally:
        deployed.stop()


def test_the_bank_api_through_nginx_over_the_uwsgi_socket(deployment: Deployment) -> None:
    """nginx → unix socket (uwsgi protocol) → 4 workers, each with its own application built after
    its fork; the client's address reaches uwsgi_es; a body over the limit is refused with the same
    413 and JSON shape by nginx and, reached directly, by uwsgi_es; the stats server answers on
    its unix socket."""
    nginx = f"http://127.0.0.1:{deployment.nginx_port}"
    direct = f"http://127.0.0.1:{deployment.direct_port}"
    json_headers = {"Content-Type": "application/json"}
    status, headers, opened = get(f"{nginx}/accounts", b'{"owner": "nginx"}', json_headers)
    assert status == 201, opened
    assert headers["X-Request-ID"], "nginx's request id did not reach uwsgi_es"
    status, _, account = get(f"{nginx}/accounts/{opened['id']}/deposits", b'{"amount": 7}', json_headers)
    assert (status, account["balance"]) == (200, 7)
    _, headers, _ = get(f"{nginx}/health", headers={"X-Request-ID": "from-the-client"})
    assert headers["X-Request-ID"] == "from-the-client"

    pids = {get(f"{nginx}/worker")[2]["pid"] for _ in range(40)}  # the client is local: an operator
    workers = {get(f"{nginx}/worker")[2]["built_in_pid"] for _ in range(40)}
    assert pids == workers, "a worker serves an application built in another process"
    assert len(pids) >= 2

    too_large = b'{"owner": "' + b"x" * 65536 + b'"}'
    through_nginx = get(f"{nginx}/accounts", too_large, json_headers)
    reaching_uwsgi_es = get(f"{direct}/accounts", too_large, json_headers)
    assert (through_nginx[0], reaching_uwsgi_es[0]) == (413, 413)
    assert "65536" in through_nginx[2]["error"]
    assert "65536" in reaching_uwsgi_es[2]["error"]
    at_the_limit = b'{"owner": "' + b"x" * (65536 - 13) + b'"}'
    assert len(at_the_limit) == 65536
    status, _, answer = get(f"{nginx}/accounts", at_the_limit, json_headers)
    assert status != 413, answer  # it reached uwsgi_es, which judged the owner itself
    assert get(f"{direct}/accounts", at_the_limit, json_headers)[:1] == (status,)

    with socket.socket(socket.AF_UNIX) as stats:
        stats.connect(str(deployment.runtime / "stats.sock"))
        raw = b""
        while chunk := stats.recv(65536):
            raw += chunk
    report = json.loads(raw)
    assert len(report["workers"]) == 4
    assert sum(worker["requests"] for worker in report["workers"]) >= 80


def test_an_emperor_vassal_reloads_under_load_without_a_failed_request(
    tmp_path: Path, app_env: dict[str, str]
) -> None:
    """A real `uwsgi --emperor` directory whose vassal is deploy/uwsgi-nginx.ini as shipped, behind
    a real nginx with deploy/nginx-uwsgi-es.conf: touching the vassal reloads it gracefully while
    reads keep coming through nginx, and every one of them is answered 200 (a read whose connection
    uWSGI reset as its worker left is passed again by nginx: the conf lists the socket twice);
    removing the vassal stops it."""
    vassals, runtime = tmp_path / "vassals", tmp_path / "run"
    vassals.mkdir()
    runtime.mkdir()
    vassal = vassals / "bank.ini"
    vassal.write_text(f"[uwsgi]\nini = {DEPLOY / 'uwsgi-nginx.ini'}\n")
    log = tmp_path / "emperor.log"
    nginx = Nginx(tmp_path, runtime / "uwsgi.sock")
    with log.open("wb") as output:
        emperor = subprocess.Popen(
            [str(BIN / "uwsgi"), "--emperor", str(vassals), "--emperor-stats", f"127.0.0.1:{free_port()}"],
            env={**os.environ, **app_env, "RUNTIME_DIRECTORY": str(runtime)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not (runtime / "uwsgi.sock").exists():
                assert emperor.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            nginx.start()
            base = f"http://127.0.0.1:{nginx.port}"
            while get_status(f"{base}/ready") != 200:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            account = get(f"{base}/accounts", b'{"owner": "vassal"}', {"Content-Type": "application/json"})[2]
            before = {get(f"{base}/worker")[2]["pid"] for _ in range(30)}
            outcomes: list[int | str] = []
            loading = True

            def load() -> None:
                while loading:
                    try:
                        outcomes.append(get(f"{base}/accounts/{account['id']}")[0])
                    except OSError as exc:
                        outcomes.append(f"{type(exc).__name__}: {exc}")

            readers = [threading.Thread(target=load) for _ in range(4)]
            for reader in readers:
                reader.start()
            time.sleep(1)
            answered_before = len(outcomes)
            os.utime(vassal)  # the Emperor reloads a vassal whose file changed
            deadline = time.monotonic() + 30
            while not ({get(f"{base}/worker")[2]["pid"] for _ in range(10)} - before):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(1)
            loading = False
            for reader in readers:
                reader.join(30)
            assert set(outcomes) == {200}, [o for o in outcomes if o != 200][:5]
            assert len(outcomes) > answered_before + 10, "the load stopped during the reload"
            passed_again = nginx.log.read_text().count("while reading response header from upstream")

            vassal.unlink()  # the Emperor stops a vassal whose file is gone
            deadline = time.monotonic() + 30
            while get_status(f"{base}/health") == 200:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            assert emperor.poll() is None, "the Emperor itself stopped"
        finally:
            nginx.stop()
            stop_process(emperor, signal.SIGINT)
    print(
        f"emperor: {len(outcomes)} reads through nginx during a graceful vassal reload, all answered"
        f" 200; {passed_again} of them passed again by nginx after uWSGI reset their connection"
    )


class ResetFirstConnection:
    """What uWSGI's graceful reload can do to one connection, on demand: a unix socket whose first
    connection is closed with a reset once its request has arrived (a worker that accepted it and
    left without reading it); every later one is answered 200 (a worker that took over)."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.connections = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self.connections += 1
                if self.connections == 1:
                    select.select([connection], [], [], 5)  # the request is there, unread
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}")


@pytest.mark.parametrize(("method", "status", "connections"), [("GET", 200, 2), ("POST", 502, 1)])
def test_nginx_passes_a_reset_read_again_and_never_a_write(
    tmp_path: Path, method: str, status: int, connections: int
) -> None:
    """deploy/nginx-uwsgi-es.conf lists the uWSGI socket twice, so a GET whose connection was reset
    before an answer (uWSGI's graceful reload, above) is passed once more and answered; a POST is
    never passed twice (it could have been applied): its client gets 502 and retries with its key."""
    upstream = ResetFirstConnection(tmp_path / "uwsgi.sock")
    nginx = Nginx(tmp_path, tmp_path / "uwsgi.sock")
    upstream.connections = 1  # nginx.start()'s own /health check is answered at once
    try:
        nginx.start()
        upstream.connections = 0
        request = urllib.request.Request(
            f"http://127.0.0.1:{nginx.port}/accounts", data=b"{}" if method == "POST" else None, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (http://127.0.0.1 only)
                answered = answer.status
        except urllib.error.HTTPError as refused:
            answered = refused.code
        assert (answered, upstream.connections) == (status, connections)
        assert "Connection reset by peer" in nginx.log.read_text()
    finally:
        nginx.stop()
        upstream.listener.close()
