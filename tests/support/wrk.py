"""wrk, the HTTP load generator, driving a server flat out from a process of its own: a Python
client's threads share one GIL and cap the rate far below what the server can take (about a third
of it on this machine), so a test of "the maximum write rate" must not be loaded from Python.

Installed by ``make test`` (the ``wrk`` target); a missing wrk fails the test that needs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from uwsgi_es.testing import UwsgiServer

# Deposits round-robin over the accounts (the connections share one counter, so the requests in
# flight at once go to different accounts), each of an amount that varies with the request.
DEPOSITS = """
local paths = { %s }
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, paths[(n %% #paths) + 1], nil, '{"amount": ' .. (n %% 97 + 1) .. '}')
end
"""


@dataclass
class WrkResult:
    requests: int
    rate: float  # requests per second
    failed: int  # answers other than 2xx/3xx, refused connections, writes that failed, timeouts
    output: str


class WrkDeposits:
    """``connections`` wrk connections depositing into ``accounts`` for ``seconds``, in the
    background: ``start()``, then ``wait()`` for its figures."""

    def __init__(
        self, server: UwsgiServer, accounts: list[str], seconds: float, work_dir: Path, connections: int = 8
    ) -> None:
        binary = shutil.which("wrk")
        assert binary, "wrk is missing: `make test` installs it (apt-get install wrk)"
        self.script = work_dir / "deposits.lua"
        self.script.write_text(DEPOSITS % ", ".join(f'"/accounts/{a}/deposits"' for a in accounts))
        self.command = [
            binary,
            "-t1",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "--timeout",
            "10s",
            "-s",
            str(self.script),
            server.url,
        ]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> WrkDeposits:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> WrkResult:
        assert self.process is not None
        output, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, output
        requests = int(_figure(r"(\d+) requests in", output))
        rate = float(_figure(r"Requests/sec:\s+([\d.]+)", output))
        non_2xx = int(_figure(r"Non-2xx or 3xx responses:\s+(\d+)", output, "0"))
        # Not read errors: uWSGI's HTTP router closes each connection after its answer (no
        # keep-alive), which wrk counts as one read error per request it completed.
        socket = re.search(r"Socket errors: connect (\d+), read \d+, write (\d+), timeout (\d+)", output)
        errors = sum(int(n) for n in socket.groups()) if socket else 0
        return WrkResult(requests, rate, non_2xx + errors, output)

    def kill(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.kill()
            self.process.wait()


def _figure(pattern: str, output: str, default: str | None = None) -> str:
    found = re.search(pattern, output)
    if found:
        return found.group(1)
    assert default is not None, f"no {pattern!r} in wrk's output:\n{output}"
    return default
