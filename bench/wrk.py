"""Driving load with wrk: one run's rate, and the Lua scripts that pick the next request."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender
from uwsgi_es.testing import UwsgiServer

CONNECTIONS = 8
WRK_CORE, SERVER_CORE = 0, 1  # the ceiling row: load generator and server never share a core


def wrk(server: UwsgiServer, script: str, seconds: int) -> float:
    """Requests per second of one wrk run; non-2xx answers make the run fail loudly."""
    return wrk_run(server, script, seconds)[0]


def wrk_run(server: UwsgiServer, script: str, seconds: int) -> tuple[float, int]:
    """(requests per second, requests) of one wrk run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    result = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", lua.name, server.url],
        capture_output=True,
        text=True,
        check=True,
    )
    os.unlink(lua.name)
    return _parsed(result, server)


@dataclass
class PinnedRun:
    """One wrk run with the server on one core and wrk on another, and how busy each was: the
    side near 100% of its core is the bottleneck."""

    rate: float
    server_busy: float  # the server's processes, in cores (1.0: its core never idle)
    wrk_busy: float


def wrk_pinned(server: UwsgiServer, path: str, seconds: int) -> PinnedRun:
    """A run of one fixed path without a Lua script (a script's per-request call caps wrk near the
    rate of a bare WSGI app on this machine), wrk on core 0, the server already on core 1."""
    pids = [server.pid, *server.worker_pids()]
    before, children = _cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            "taskset",
            "-c",
            str(WRK_CORE),
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            server.url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    after, reaped = _cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (reaped.ru_utime + reaped.ru_stime) - (children.ru_utime + children.ru_stime)
    return PinnedRun(_parsed(result, server)[0], (after - before) / seconds, wrk_cpu / seconds)


def pin_server(server: UwsgiServer) -> None:
    """Put the server's master and workers on their own core (``SERVER_CORE``)."""
    for pid in (server.pid, *server.worker_pids()):
        os.sched_setaffinity(pid, {SERVER_CORE})


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _parsed(result: subprocess.CompletedProcess[str], server: UwsgiServer) -> tuple[float, int]:
    if "Non-2xx" in result.stdout:
        raise RuntimeError(f"errors during the run:\n{result.stdout}\n{server.log_tail(20)}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", result.stdout).group(1))  # type: ignore[union-attr]
    return rate, count


def script(method: str, paths: list[str], body: str | None = None) -> str:
    listing = ", ".join(f'"{p}"' for p in paths)
    lines = [f"local paths = {{ {listing} }}", "local n = 0", f'wrk.method = "{method}"']
    if body is not None:
        lines += ['wrk.headers["Content-Type"] = "application/json"', f"wrk.body = '{body}'"]
    lines += [
        "request = function()",
        "  n = n + 1",
        "  return wrk.format(nil, paths[(n % #paths) + 1])",
        "end",
    ]
    return "\n".join(lines) + "\n"


def deposit_script(contender: Contender) -> str:
    return script("POST", [f"/accounts/{a}/deposits" for a in contender.accounts["write"]], '{"amount": 1}')


def read_script(purpose: str) -> Callable[[Contender], str]:
    return lambda contender: script("GET", [f"/accounts/{a}" for a in contender.accounts[purpose]])
