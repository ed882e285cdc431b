"""Property-based hostile input against a running uWSGI: ≥ 10,000 malformed requests.

Hypothesis generates request lines, headers and bodies (invalid UTF-8, deep nesting, huge numbers,
duplicate keys, NaN/Infinity, lying lengths, traversal, encoded NULs, long paths, odd methods)
and sends them byte for byte over raw sockets (tests/support/hostile.py). The properties: no 5xx,
no unanswered request (but for ones whose Content-Length is not their body's length, which uWSGI's
router may drop), no worker dies, and the store changes only by the requests that were accepted
(2xx).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ..support.hostile import (
    check_only_accepted_writes_changed_the_store,
    events_of,
    feed_length,
    send_hostile_requests,
)
from ..support.paths import INI

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "10000"))
StartServer = Any


def test_hostile_requests_never_get_a_5xx_and_change_nothing_when_refused(
    uwsgi_server: StartServer, backend_env: dict[str, str], report: Any
) -> None:
    server = uwsgi_server(INI, env=backend_env, options=["--processes", "2"])
    account = server.post("/accounts", {"owner": "witness"}).json()["id"]
    before_feed, before_witness = feed_length(server), events_of(server, account)
    workers = set(server.worker_pids())
    outcome = send_hostile_requests(server, account, EXAMPLES)
    assert set(server.worker_pids()) == workers, "a worker died or was replaced"
    assert "DAMN ! worker" not in server.log()
    check_only_accepted_writes_changed_the_store(server, account, outcome, before_witness, before_feed)
    sent = sum(outcome.statuses.values())
    assert sent >= EXAMPLES
    report(
        "hostile input (hypothesis)",
        backend_env,
        f"{sent} requests, statuses {dict(sorted(outcome.statuses.items()))}, 5xx 0, worker deaths 0, "
        f"{len(outcome.accepted_writes)} accepted writes stored once each, nothing else changed",
    )
