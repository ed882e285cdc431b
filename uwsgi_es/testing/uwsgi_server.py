"""Start a real uWSGI in tests, wait until every worker is really ready, and stop it for sure.

For our own integration tests and for our users' suites (the ``uwsgi_server`` pytest fixture in
``uwsgi_es.pytest_plugin`` wraps it)::

    with UwsgiServer("uwsgi.ini", options=["--processes", "4"]) as server:
        assert server.get("/worker").json()["constructions"] == 1

What it does, and why:

- Picks free ports (bind to port 0) for HTTP and the stats server; never a fixed port.
- Passes the HTTP address as ``UWSGI_ES_HTTP``: an ini file binds it with
  ``if-env = UWSGI_ES_HTTP`` / ``http = %(_)`` / ``endif =`` (as ours do). ``--http`` is added
  when there is no ini or it (with the files it includes) never mentions the variable, or as
  ``add_http=`` says.
- Readiness is not an open port: the HTTP router binds before the workers have built anything.
  It waits until every worker slot (from the stats server) has answered ``/ready`` with 200 and a
  JSON ``worker_id``, firing concurrent requests so that all workers take some, and then until
  the stats server shows every worker idle.
- uWSGI runs in its own session with its log in a file; stopping sends SIGINT to the process
  group, waits up to ``stop_timeout`` seconds, then SIGKILLs the group (a master throttling
  respawns can ignore SIGINT). Startup failures raise ``UwsgiStartError`` with the log's tail.

It needs only the standard library, so it runs wherever uWSGI does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.testing.processes import StartStop, free_port

WaitFor = Literal["ready", "health", "nothing"]


class UwsgiStartError(UwsgiEsError, RuntimeError):
    """uWSGI exited or never became ready; the message ends with its log."""


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float = 0.0
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._json is None:
            self._json = json.loads(self.body)
        return self._json


def _ini_mentions(ini: Path, needle: str, depth: int = 0) -> bool:
    """Whether an ini file, or one it includes with ``ini = ...``, contains ``needle``."""
    text = ini.read_text()
    if needle in text:
        return True
    for included in re.findall(r"^\s*ini\s*=\s*(\S+)\s*$", text, flags=re.MULTILINE):
        file_name = re.sub(r":[\w-]*$", "", included)  # file.ini:section includes one section
        path = Path(file_name.replace("%d", f"{ini.parent}/").replace("%p", str(ini))) if file_name else ini
        if depth < 5 and path != ini and path.exists() and _ini_mentions(path, needle, depth + 1):
            return True
    return False


def find_uwsgi() -> str:
    """The ``uwsgi`` beside this Python (a virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "uwsgi"
    if beside.exists():
        return str(beside)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / "uwsgi"
        if candidate.exists():
            return str(candidate)
    raise UwsgiStartError("No uwsgi binary found: pip install uwsgi (it is a dependency of uwsgi_es).")


class UwsgiServer(StartStop):
    """One real uWSGI instance. Use as a context manager, or call ``start()`` and ``stop()``."""

    stop_signal = signal.SIGINT  # to the whole group first; SIGKILL after ``stop_timeout``

    def __init__(
        self,
        ini: str | os.PathLike[str] | None = None,
        *,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        wait_for: WaitFor = "ready",
        ready_path: str = "/ready",
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        uwsgi_binary: str | None = None,
        add_http: bool | None = None,
        http_option: str = "--http",
        migrate: bool = False,
    ) -> None:
        self.ini = Path(ini).resolve() if ini is not None else None
        self.options = list(options)
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else (self.ini.parent if self.ini else Path.cwd())
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="uwsgi_es-"))
        self.wait_for = wait_for
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.uwsgi_binary = uwsgi_binary or find_uwsgi()
        if add_http is None:
            add_http = self.ini is None or not _ini_mentions(self.ini, "UWSGI_ES_HTTP")
        self.add_http = add_http
        self.http_option = http_option  # "--http" (uWSGI's HTTP router) or "--http-socket"
        self.migrate = migrate  # run `uwsgi-es migrate --ini` first, as a deployment does
        self.port = 0
        self.stats_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.log_dir / "uwsgi.log"
        self.startup_seconds = 0.0

    # lifecycle ----------------------------------------------------------------------------------

    def command(self) -> list[str]:
        argv = [self.uwsgi_binary]
        if self.ini is not None:
            argv += ["--ini", str(self.ini)]
        argv += self.options
        if self.add_http:
            argv += [self.http_option, self.address]
        argv += ["--stats", f"127.0.0.1:{self.stats_port}"]
        return argv

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int:
        """The master's pid (uWSGI is exec'd directly, so the child we started is the master)."""
        if self.process is None:
            raise RuntimeError("uWSGI is not started")
        return self.process.pid

    def start(self) -> Self:
        self.port, self.stats_port = free_port(), free_port()
        env = {**os.environ, **self.env, "UWSGI_ES_HTTP": self.address}
        if sys.prefix != sys.base_prefix:
            env.setdefault("VIRTUAL_ENV", sys.prefix)  # uWSGI's Python finds the venv's packages
        if self.migrate:
            self._migrate(env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            if self.wait_for == "ready":
                self.wait_until_ready()
            elif self.wait_for == "health":
                self.wait_until_answering("/health")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _migrate(self, env: Mapping[str, str]) -> None:
        """Create the tables of the application the ini serves, as a deployment does first."""
        if self.ini is None:
            raise UwsgiStartError("migrate=True needs an ini: `uwsgi-es migrate --ini` reads it")
        command = [str(Path(sys.executable).parent / "uwsgi-es"), "migrate", "--ini", str(self.ini)]
        done = subprocess.run(
            command, cwd=self.cwd, env=dict(env), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise UwsgiStartError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")

    def stop(self) -> int | None:
        """Stop the whole instance (``stop_signal``, then SIGKILL to the group); return the exit
        code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(self.stop_timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # stragglers: workers, the HTTP router
        code = process.wait()
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # readiness ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The stats server's JSON: workers with their pids, statuses and request counts."""
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=5) as sock:
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        stats: dict[str, Any] = json.loads(b"".join(chunks))
        return stats

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.stats()["workers"] if w["pid"] > 0]

    def _check_alive(self, waiting_for: str) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise UwsgiStartError(
                f"uWSGI exited with code {self.process.returncode} while waiting for {waiting_for}. "
                f"Command: {' '.join(self.command())}\n--- log ---\n{self.log_tail()}"
            )

    def wait_until_answering(self, path: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive(path)
            with contextlib.suppress(OSError):
                if self.get(path, timeout=2).status == 200:
                    return
            time.sleep(0.02)
        raise UwsgiStartError(
            f"{path} never answered 200 within {self.startup_timeout}s\n--- log ---\n{self.log_tail()}"
        )

    def wait_until_ready(self, *, idle: bool = True) -> None:
        """Until every worker slot has answered ``ready_path`` with 200 (not just an open port),
        and then (``idle``) until none is still busy with a request. Say ``idle=False`` under load."""
        deadline = time.monotonic() + self.startup_timeout
        ready: set[int] = set()
        slots: set[int] = set()
        last_problem = "the stats server did not answer yet"
        with ThreadPoolExecutor(max_workers=16) as pool:
            while time.monotonic() < deadline:
                self._check_alive(self.ready_path)
                try:
                    slots = {w["id"] for w in self.stats()["workers"]}
                except (OSError, ValueError, KeyError) as exc:
                    last_problem = f"stats server: {exc}"
                    time.sleep(0.05)
                    continue
                results = list(pool.map(lambda _: self._probe_ready(), range(4 * max(1, len(slots)))))
                for outcome in results:
                    if isinstance(outcome, int):
                        ready.add(outcome)
                    else:
                        last_problem = outcome
                if slots and slots <= ready:
                    if idle:
                        self.wait_until_idle(max(0.1, deadline - time.monotonic()))
                    return
                time.sleep(0.02)
        raise UwsgiStartError(
            f"not every worker became ready within {self.startup_timeout}s: workers {sorted(slots)}, "
            f"ready {sorted(ready)}; last problem: {last_problem}\n--- log ---\n{self.log_tail()}"
        )

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Until the stats server shows every worker idle (none still finishing a request).

        A worker signalled while uWSGI still counts it busy skips its atexit hooks, so a
        test that stops the server right after a request should wait for this first.
        """
        deadline = time.monotonic() + timeout
        statuses: list[str] = []
        while time.monotonic() < deadline:
            self._check_alive("idle workers")
            statuses = [str(w.get("status")) for w in self.stats()["workers"]]
            if statuses and all(status == "idle" for status in statuses):
                return
            time.sleep(0.01)
        raise UwsgiStartError(f"workers never all idle within {timeout}s: {statuses}")

    def _probe_ready(self) -> int | str:
        try:
            result = self.get(self.ready_path, timeout=5)
        except OSError as exc:
            return f"{self.ready_path}: {exc}"
        if result.status != 200:
            return f"{self.ready_path} answered {result.status}: {result.body[:300]!r}"
        try:
            return int(result.json()["worker_id"])
        except (ValueError, KeyError, TypeError):
            return f"{self.ready_path} answered 200 without a JSON worker_id: {result.body[:300]!r}"

    # HTTP -------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> HttpResult:
        """One request on a new connection (so consecutive requests spread over workers)."""
        sent_headers = {"Connection": "close", **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body)
            sent_headers.setdefault("Content-Type", "application/json")
        payload = body.encode() if isinstance(body, str) else body
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=payload, headers=sent_headers)
            response = connection.getresponse()
            data = response.read()
            return HttpResult(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                data,
                time.monotonic() - started,
            )
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> HttpResult:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> HttpResult:
        return self.request("POST", path, json_body=json_body, **kwargs)
