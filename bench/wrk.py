"""Driving load with wrk: one run's rate, and the Lua scripts that pick the next request."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable

from bench.contenders import Contender
from uwsgi_es.testing import UwsgiServer

CONNECTIONS = 8


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
