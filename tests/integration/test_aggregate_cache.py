"""The per-worker aggregate cache on real uWSGI workers: however requests spread over workers,
each command acts on the account as stored, never on a worker's stale copy."""

from __future__ import annotations

from typing import Any

import pytest

from ..support.paths import INI

pytestmark = pytest.mark.integration
StartServer = Any


def test_workers_with_caches_never_act_on_stale_state(
    uwsgi_server: StartServer, sql_backend_env: dict[str, str]
) -> None:
    """300 deposits and withdrawals on one account, one at a time, over 4 workers that each cache
    it. A withdrawal is refused exactly when the balance, as stored, is too low: a worker acting
    on its cached copy from an earlier request would accept one it must refuse, or the reverse."""
    server = uwsgi_server(INI, env=sql_backend_env, options=["--processes", "4"])
    account = server.post("/accounts", {"owner": "cached"}).json()["id"]
    balance = 0
    for step in range(300):
        if step % 3 == 2:
            answer = server.post(f"/accounts/{account}/withdrawals", {"amount": 50})
            expected = 200 if balance >= 50 else 409
            assert answer.status == expected, f"step {step}: balance {balance}, answered {answer.body!r}"
            balance -= 50 if expected == 200 else 0
        else:
            answer = server.post(f"/accounts/{account}/deposits", {"amount": 20})
            assert answer.status == 200
            balance += 20
        if answer.status == 200:
            assert answer.json()["balance"] == balance, f"step {step}"
    caches = [server.get("/worker").json()["cache"] for _ in range(40)]
    assert sum(1 for cache in caches if cache["hits"] > 0) > 0, caches
    assert server.get(f"/accounts/{account}").json()["balance"] == balance
