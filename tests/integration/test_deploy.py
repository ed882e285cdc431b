"""deploy/ for real servers: the systemd unit checked by systemd-analyze, and the production shape
(nginx speaking the uwsgi protocol to uWSGI on a unix socket, the stats server on another) run with
a real nginx from Debian's packages and a real uWSGI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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


class Deployment:
    """uWSGI from deploy/uwsgi-nginx.ini (unix sockets in a runtime directory, plus an HTTP
    socket for the test to reach it directly) and nginx from deploy/nginx-uwsgi-es.conf."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.runtime = folder / "run"
        self.runtime.mkdir()
        self.direct_port, self.nginx_port = free_port(), free_port()
        self.uwsgi_log, self.nginx_log = folder / "uwsgi.log", folder / "nginx-error.log"
        command = [
            str(BIN / "uwsgi"),
            "--ini",
            str(DEPLOY / "uwsgi-nginx.ini"),
            "--http-socket",
            f"127.0.0.1:{self.direct_port}",
            "--chmod-socket=666",  # nginx's workers run as another user here
        ]
        self.outputs = [self.uwsgi_log.open("wb"), (folder / "nginx.out").open("wb")]
        self.uwsgi = subprocess.Popen(
            command,
            env={**os.environ, **env, "RUNTIME_DIRECTORY": str(self.runtime)},
            stdout=self.outputs[0],
            stderr=subprocess.STDOUT,
        )
        self.nginx: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        deadline = time.monotonic() + 60
        while get_status(f"http://127.0.0.1:{self.direct_port}/ready") != 200:
            assert self.uwsgi.poll() is None, self.uwsgi_log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.uwsgi_log.read_text()[-3000:]
            time.sleep(0.2)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        assert Path(nginx).exists(), "nginx is missing: make test installs it (apt-get install nginx-light)"
        site = (DEPLOY / "nginx-uwsgi-es.conf").read_text()
        site = site.replace("unix:/run/uwsgi-es/uwsgi.sock", f"unix:{self.runtime}/uwsgi.sock")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.nginx_port};")
        (self.folder / "site.conf").write_text(site)
        shutil.copy("/etc/nginx/uwsgi_params", self.folder / "uwsgi_params")
        temp = {kind: self.folder / kind for kind in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (self.folder / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"pid {self.folder}/nginx.pid;\nerror_log {self.nginx_log};\nworker_processes 1;\n"
            + "events { worker_connections 256; }\n"
            + "http {\n  access_log off;\n"
            + f"  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
            + f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
            + f"  scgi_temp_path {temp['scgi']};\n  include {self.folder}/site.conf;\n}}\n"
        )
        self.nginx = subprocess.Popen(
            [nginx, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=self.outputs[1],
        )
        deadline = time.monotonic() + 20
        while get_status(f"http://127.0.0.1:{self.nginx_port}/health") != 200:
            assert self.nginx.poll() is None, (
                self.folder / "nginx.out"
            ).read_text() + self.nginx_log.read_text()
            assert time.monotonic() < deadline, self.nginx_log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        for process, sig in ((self.nginx, signal.SIGQUIT), (self.uwsgi, signal.SIGTERM)):
            if process is not None and process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for output in self.outputs:
            output.close()


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
    """A real `uwsgi --emperor` directory: the vassal (deploy/uwsgi-nginx.ini plus an HTTP socket
    for this test) starts; touching it reloads it gracefully while requests keep coming, and every
    one of them is answered; removing it stops it."""
    vassals, runtime = tmp_path / "vassals", tmp_path / "run"
    vassals.mkdir()
    runtime.mkdir()
    port = free_port()
    vassal = vassals / "bank.ini"
    vassal.write_text(f"[uwsgi]\nini = {DEPLOY / 'uwsgi-nginx.ini'}\nhttp-socket = 127.0.0.1:{port}\n")
    log = tmp_path / "emperor.log"
    with log.open("wb") as output:
        emperor = subprocess.Popen(
            [str(BIN / "uwsgi"), "--emperor", str(vassals), "--emperor-stats", f"127.0.0.1:{free_port()}"],
            env={**os.environ, **app_env, "RUNTIME_DIRECTORY": str(runtime)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while get_status(f"{base}/ready") != 200:
                assert emperor.poll() is None, log.read_text()[-3000:]
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

            vassal.unlink()  # the Emperor stops a vassal whose file is gone
            deadline = time.monotonic() + 30
            while get_status(f"{base}/health") is not None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            assert emperor.poll() is None, "the Emperor itself stopped"
        finally:
            emperor.send_signal(signal.SIGINT)
            try:
                emperor.wait(20)
            except subprocess.TimeoutExpired:
                emperor.kill()
                emperor.wait()
    print(f"emperor: {len(outcomes)} reads during a graceful vassal reload, all answered 200")
