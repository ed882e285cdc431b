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


@dataclass
class Run:
    """One wrk run, and how busy each side was over it (in cores): the side near its limit is the
    bottleneck. wrk runs one thread, so 1.0 is its limit; the machine's is its core count (the
    server's processes, a database server's and wrk's together)."""

    rate: float
    requests: int
    server_busy: float  # the uWSGI master and workers
    wrk_busy: float
    machine_busy: float  # every process of the machine (a database server's too)

    @property
    def bottleneck(self) -> str:
        if self.wrk_busy >= GENERATOR_BOUND:
            return "load generator"
        if self.machine_busy >= MACHINE_BOUND * CORES:
            return "server CPU"
        return "server waits"  # neither side's cores full: fsync, locks, round trips


CORES = os.cpu_count() or 1
GENERATOR_BOUND = 0.9  # of wrk's one core
MACHINE_BOUND = 0.9  # of all cores


def wrk(server: UwsgiServer, script: str, seconds: int) -> Run:
    """One wrk run with a Lua script; non-2xx answers make the run fail loudly."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", lua.name, server.url]
        return _measured(server, command, seconds)
    finally:
        os.unlink(lua.name)


def wrk_run(server: UwsgiServer, script: str, seconds: int) -> tuple[float, int]:
    """(requests per second, requests) of one wrk run."""
    run = wrk(server, script, seconds)
    return run.rate, run.requests


def wrk_path(server: UwsgiServer, path: str, seconds: int, *, core: int | None = None) -> Run:
    """A run of one fixed path without a Lua script (a script's per-request call caps wrk near the
    rate of a bare WSGI app on this machine); on ``core`` only, when given."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", server.url + path]
    return _measured(server, command if core is None else ["taskset", "-c", str(core), *command], seconds)


def wrk_pinned(server: UwsgiServer, path: str, seconds: int) -> Run:
    """``wrk_path`` on core 0, the server already on core 1 (``pin_server``)."""
    return wrk_path(server, path, seconds, core=WRK_CORE)


def _measured(server: UwsgiServer, command: list[str], seconds: int) -> Run:
    pids = [server.pid, *server.worker_pids()]
    before, children, machine = (
        _cpu_seconds(pids),
        resource.getrusage(resource.RUSAGE_CHILDREN),
        _machine_busy_seconds(),
    )
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    after, reaped = _cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = _machine_busy_seconds() - machine
    wrk_cpu = (reaped.ru_utime + reaped.ru_stime) - (children.ru_utime + children.ru_stime)
    rate, requests = _parsed(result, server)
    return Run(rate, requests, (after - before) / seconds, wrk_cpu / seconds, machine / seconds)


def _machine_busy_seconds() -> float:
    """CPU seconds every core spent on anything but idling or waiting for I/O, since boot."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, _steal = fields  # steal: the hypervisor's
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


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
