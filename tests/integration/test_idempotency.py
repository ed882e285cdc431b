"""Idempotency-Key on real uWSGI workers and real databases: repeats racing each other across
workers store once and get one answer; a store that cannot keep answers refuses the key."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from ..support.checks import all_events, fan_out
from ..support.paths import INI

pytestmark = pytest.mark.integration
StartServer = Any


def test_repeats_racing_across_workers_store_once_and_get_one_answer(
    uwsgi_server: StartServer, sql_backend_env: dict[str, str]
) -> None:
    """20 deposits, each sent 8 times at once with its key to 4 workers: 20 events stored, and
    the 8 answers of each deposit are the same answer (one of them the first, the rest replays)."""
    server = uwsgi_server(INI, env=sql_backend_env, options=["--processes", "4"])
    account = server.post("/accounts", {"owner": "racer"}).json()["id"]
    for round_ in range(20):
        key = str(uuid4())

        def send(_: int, key: str = key, amount: int = round_ + 1) -> Any:
            return server.post(
                f"/accounts/{account}/deposits", {"amount": amount}, headers={"Idempotency-Key": key}
            )

        answers = fan_out(8, send, concurrency=8)
        assert [a.status for a in answers] == [200] * 8, [a.body for a in answers]
        assert len({a.body for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") != "true" for a in answers) == 1
    events = all_events(server, account)
    assert [e["state"].get("amount") for e in events[1:]] == list(range(1, 21))


def test_a_store_that_cannot_keep_answers_refuses_the_key(
    uwsgi_server: StartServer, cassandra_env: dict[str, str]
) -> None:
    """Cassandra cannot store an answer in the same transaction as the events: 422, nothing done."""
    server = uwsgi_server(INI, env=cassandra_env)
    account = server.post("/accounts", {"owner": "keyed"}).json()["id"]
    refused = server.post(
        f"/accounts/{account}/deposits", {"amount": 5}, headers={"Idempotency-Key": str(uuid4())}
    )
    assert refused.status == 422
    assert "Idempotency-Key needs a store that can keep an answer" in refused.json()["error"]
    assert server.get(f"/accounts/{account}").json()["balance"] == 0
