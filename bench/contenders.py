"""The contenders: each application under the same uWSGI options, and the accounts they serve."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwsgi_es.testing import UwsgiServer

PROJECT = Path(__file__).resolve().parent.parent
COMMON = [
    "--master",
    "--processes",
    "2",
    "--disable-logging",
    "--need-app",
    "--die-on-term",
    "--enable-threads",
]


@dataclass
class Contender:
    name: str
    server: UwsgiServer
    accounts: dict[str, list[str]] = field(default_factory=dict)  # account ids by purpose
    opens_accounts: bool = True  # False: the raw anchors have no accounts, only rows per id


# The ceiling row only: keep-alive connections (a new connection per request costs wrk more than
# the server: wrk would be the bottleneck) and enough workers to keep the server's one core busy.
CEILING = ["--processes", "4", "--http11-socket"]


def start(
    module: str,
    env: dict[str, str],
    log_dir: Path,
    wait_for: Any = "health",
    *,
    ceiling: bool = False,
) -> UwsgiServer:
    options = [*COMMON, "--module", module]
    if ceiling:
        options[options.index("--processes") + 1] = CEILING[1]
    return UwsgiServer(
        options=options,
        env=env,
        cwd=PROJECT,
        log_dir=log_dir,
        wait_for=wait_for,
        add_http=True,
        http_option=CEILING[2] if ceiling else "--http-socket",
    ).start()


def open_accounts(contender: Contender, purpose: str, count: int, events: int) -> None:
    """``count`` accounts of ``events`` events each (the opening counts as one where there is one)."""
    server = contender.server
    ids = []
    for _ in range(count):
        if not contender.opens_accounts:
            account = str(uuid.uuid4())
            deposits = events
        else:
            account = server.post("/accounts", {"owner": "bench"}).json()["id"]
            deposits = events - 1
        for _ in range(deposits):
            answer = server.post(f"/accounts/{account}/deposits", {"amount": 1})
            assert answer.status == 200, answer.body
        ids.append(account)
    contender.accounts[purpose] = ids
