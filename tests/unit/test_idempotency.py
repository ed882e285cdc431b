"""Idempotency-Key on POST, over WSGI on a real SQLite file: a repeat gets the first answer and
stores nothing; a key reused for another request is 422; bad keys are 400; answers expire."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from typing import Any
from uuid import uuid4

import pytest
from werkzeug.test import Client, TestResponse

from uwsgi_es.stores.base import IDEMPOTENCY_TABLE

from .test_web import open_account, stored_records


def keyed(client: Client, path: str, body: Any, key: str) -> TestResponse:
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_a_repeat_gets_the_first_answer_and_stores_nothing(client: Client) -> None:
    account = open_account(client)
    key = str(uuid4())
    first = keyed(client, f"/accounts/{account}/deposits", {"amount": 5}, key)
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    stored = stored_records(client)
    for _ in range(3):
        again = keyed(client, f"/accounts/{account}/deposits", {"amount": 5}, key)
        assert again.status_code == 200
        assert again.get_data() == first.get_data()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["X-Event-Position"] == first.headers["X-Event-Position"]
        assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert stored_records(client) == stored
    assert client.get(f"/accounts/{account}").json["balance"] == 5  # type: ignore[index]
    other = keyed(client, f"/accounts/{account}/deposits", {"amount": 5}, str(uuid4()))
    assert other.json["balance"] == 10  # type: ignore[index]


def test_a_key_reused_for_another_request_is_422_and_stores_nothing(client: Client) -> None:
    account = open_account(client)
    key = "order-7"
    assert keyed(client, f"/accounts/{account}/deposits", {"amount": 5}, key).status_code == 200
    stored = stored_records(client)
    for path, body in (
        (f"/accounts/{account}/deposits", {"amount": 6}),
        (f"/accounts/{account}/withdrawals", {"amount": 5}),
        ("/accounts", {"owner": "bob"}),
    ):
        refused = keyed(client, path, body, key)
        assert refused.status_code == 422
        assert "Idempotency-Key 'order-7' was already used for another request" in refused.json["error"]  # type: ignore[index]
    assert stored_records(client) == stored


@pytest.mark.parametrize("key", ["", " padded", "x" * 256, "naïve", "tab\there"])
def test_bad_keys_are_400_and_store_nothing(client: Client, key: str) -> None:
    account = open_account(client)
    stored = stored_records(client)
    refused = client.post(
        f"/accounts/{account}/deposits",
        json={"amount": 1},
        headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")},
    )
    assert refused.status_code == 400
    assert "Idempotency-Key must be 1 to 255 printable ASCII characters" in refused.json["error"]  # type: ignore[index]
    assert stored_records(client) == stored


def test_refused_requests_are_not_remembered(client: Client) -> None:
    """A 409 stored nothing: the same key may run the request again once it can succeed."""
    account = open_account(client)
    key = str(uuid4())
    assert keyed(client, f"/accounts/{account}/withdrawals", {"amount": 5}, key).status_code == 409
    keyed(client, f"/accounts/{account}/deposits", {"amount": 5}, str(uuid4()))
    assert keyed(client, f"/accounts/{account}/withdrawals", {"amount": 5}, key).json["balance"] == 0  # type: ignore[index]


def test_concurrent_repeats_store_once_and_all_get_the_same_answer(client: Client) -> None:
    account = open_account(client)
    key = str(uuid4())
    stored = stored_records(client)
    answers: list[TestResponse] = []
    lock = threading.Lock()

    def send() -> None:
        answer = keyed(client, f"/accounts/{account}/deposits", {"amount": 3}, key)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.get_data() for a in answers}) == 1
    assert stored_records(client) == stored + 1


def test_an_expired_key_runs_the_request_again(client: Client, sqlite_url: str) -> None:
    account = open_account(client)
    key = str(uuid4())
    keyed(client, f"/accounts/{account}/deposits", {"amount": 2}, key)
    # closing(): a connection's own `with` commits but does not close it (Python 3.13 warns)
    with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as database, database:
        database.execute(f"UPDATE {IDEMPOTENCY_TABLE} SET created = created - 86401")  # noqa: S608
    again = keyed(client, f"/accounts/{account}/deposits", {"amount": 2}, key)
    assert "Idempotent-Replayed" not in again.headers
    assert again.json["balance"] == 4  # type: ignore[index]
