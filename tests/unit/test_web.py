"""The bank API over WSGI (Werkzeug's test client, a real SQLite file): routes, errors, no 500s."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from werkzeug.test import Client, TestResponse

from uwsgi_es.application import constructions_in_this_process
from uwsgi_es.lifecycle import registry
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.web import JsonApi
from uwsgi_es.wsgi import application

from .conftest import from_address


def post(client: Client, path: str, body: Any) -> TestResponse:
    return client.post(path, json=body)


def stored_records(client: Client) -> int:
    return len(registry.get_application_lazily().records.select_all(0, 10_000))


def open_account(client: Client, owner: str = "ann") -> str:
    response = post(client, "/accounts", {"owner": owner})
    assert response.status_code == 201, response.get_data(as_text=True)
    account_id: str = response.json["id"]  # type: ignore[index]
    return account_id


def test_account_lifecycle(client: Client) -> None:
    """Open, deposit, withdraw, read back, list events, read the global feed."""
    account_id = open_account(client)
    assert post(client, f"/accounts/{account_id}/deposits", {"amount": 1000}).json == {
        "id": account_id,
        "owner": "ann",
        "balance": 1000,
        "version": 2,
    }
    assert post(client, f"/accounts/{account_id}/withdrawals", {"amount": 300}).json["balance"] == 700  # type: ignore[index]
    assert client.get(f"/accounts/{account_id}").json == {
        "id": account_id,
        "owner": "ann",
        "balance": 700,
        "version": 3,
    }
    events = client.get(f"/accounts/{account_id}/events").json["events"]  # type: ignore[index]
    assert [e["version"] for e in events] == [1, 2, 3]
    assert [e["topic"].rsplit(".", 1)[-1] for e in events] == ["Opened", "Deposited", "Withdrawn"]
    assert events[1]["state"] == {"amount": 1000}
    assert all(e["timestamp"].endswith("+00:00") for e in events)
    feed = client.get("/events?after=0&limit=2").json
    assert [e["version"] for e in feed["events"]] == [1, 2]  # type: ignore[index]
    rest = client.get(f"/events?after={feed['next_after']}").json  # type: ignore[index]
    assert [e["version"] for e in rest["events"]] == [3]  # type: ignore[index]


def test_insufficient_funds_is_a_conflict_and_stores_nothing(client: Client) -> None:
    account_id = open_account(client)
    response = post(client, f"/accounts/{account_id}/withdrawals", {"amount": 1})
    assert response.status_code == 409
    assert "insufficient funds" in response.json["error"]  # type: ignore[index]
    assert stored_records(client) == 1


def test_unknown_account_is_404(client: Client) -> None:
    for path in (f"/accounts/{uuid4()}", f"/accounts/{uuid4()}/events"):
        response = client.get(path)
        assert response.status_code == 404
        assert "No BankAccount" in response.json["error"]  # type: ignore[index]
    assert post(client, f"/accounts/{uuid4()}/deposits", {"amount": 5}).status_code == 404


def test_operational_routes(client: Client) -> None:
    """/health needs nothing; /ready builds and pings; /worker reports one build in this process."""
    before = constructions_in_this_process()
    assert client.get("/health").json["status"] == "ok"  # type: ignore[index]
    assert client.get("/ready").json["status"] == "ready"  # type: ignore[index]
    worker = client.get("/worker").json
    assert worker["pid"] == worker["built_in_pid"]  # type: ignore[index]
    assert (worker["constructions"], worker["subscriptions"], worker["worker_id"]) == (before + 1, 1, 0)  # type: ignore[index]


def test_anonymous_clients_see_no_process_details(client: Client) -> None:
    """From an address outside UWSGI_ES_OPERATOR_NETWORKS: /worker does not exist, /health and
    /ready say only their status."""
    assert client.get("/ready").status_code == 200  # builds the application
    stranger = Client(from_address(application, "203.0.113.9"))
    assert stranger.get("/health").json == {"status": "ok"}
    assert stranger.get("/ready").json == {"status": "ready"}
    worker = stranger.get("/worker")
    assert worker.status_code == 404
    assert worker.json == {"error": "no route for '/worker'"}


BAD_BODIES: list[tuple[str, bytes, str, int, str]] = [
    # (what, body, content type, status, words the error must contain)
    ("malformed JSON", b'{"amount": ', "application/json", 400, "not valid JSON"),
    ("empty body", b"", "application/json", 400, "the body is empty"),
    ("a JSON array", b"[1, 2]", "application/json", 400, "must be a JSON object, not an array"),
    ("JSON null", b"null", "application/json", 400, "not null"),
    ("a float", b'{"amount": 1.5}', "application/json", 400, "whole number of cents, not float"),
    ("a string", b'{"amount": "10"}', "application/json", 400, "not str"),
    ("a boolean", b'{"amount": true}', "application/json", 400, "not a boolean"),
    ("null amount", b'{"amount": null}', "application/json", 400, "not NoneType"),
    ("a huge number", b'{"amount": ' + b"9" * 400 + b"}", "application/json", 400, "amount"),
    ("a 5000-digit number", b'{"amount": ' + b"9" * 5000 + b"}", "application/json", 400, "cannot be read"),
    ("zero", b'{"amount": 0}', "application/json", 400, "between 1 and"),
    ("negative", b'{"amount": -5}', "application/json", 400, "between 1 and"),
    ("missing field", b"{}", "application/json", 400, "missing field(s): amount"),
    ("unknown field", b'{"amount": 5, "x": 1}', "application/json", 400, "unknown field(s): 'x'"),
    ("duplicate key", b'{"amount": 5, "amount": 6}', "application/json", 400, "repeats the key 'amount'"),
    ("NaN", b'{"amount": NaN}', "application/json", 400, "NaN"),
    ("Infinity", b'{"amount": Infinity}', "application/json", 400, "Infinity"),
    ("invalid UTF-8", b'{"amount": "\xff"}', "application/json", 400, "not valid UTF-8"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", 413, "limit"),
    (
        "nesting under the limit",
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        "application/json",
        400,
        "nested too deeply",
    ),
    (
        "form content type",
        b"amount=5",
        "application/x-www-form-urlencoded",
        415,
        "Content-Type: application/json",
    ),
    ("no content type", b'{"amount": 5}', "", 415, "no Content-Type"),
    # Read as UTF-8, b'\xe9' would be refused as invalid; read as latin-1 it would be "é": neither.
    ("latin-1 charset", b'{"amount": 5}', "application/json; charset=latin-1", 415, "UTF-8"),
    ("oversized body", b'{"amount": 5, "pad": "' + b"x" * 70_000 + b'"}', "application/json", 413, "limit"),
]


@pytest.mark.parametrize(
    ("what", "body", "content_type", "status", "words"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_deposit_bodies_are_4xx_and_change_nothing(  # noqa: PLR0917 (one per parameter)
    client: Client, what: str, body: bytes, content_type: str, status: int, words: str
) -> None:
    """Each kind of bad input gets its own 4xx naming the problem; nothing is stored."""
    account_id = open_account(client)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"/accounts/{account_id}/deposits", data=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    assert words in response.json["error"], response.json  # type: ignore[index]
    assert stored_records(client) == 1
    assert client.get(f"/accounts/{account_id}").json["balance"] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("owner", "words"),
    [
        (None, "owner must be a string"),
        ("  ", "must not be empty"),
        ("x" * 201, "longer than 200"),
        (chr(0xD800), "surrogate"),  # built, not a literal: Python 3.13.0 cannot compile one (pytest)
    ],
)
def test_bad_owners_are_refused(client: Client, owner: Any, words: str) -> None:
    response = post(client, "/accounts", {"owner": owner})
    assert response.status_code == 400
    assert words in response.json["error"]  # type: ignore[index]
    assert stored_records(client) == 0


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/nowhere", 404, "no route for '/nowhere'"),
        ("GET", "/accounts/not-a-uuid", 400, "is not an account id"),
        ("POST", "/accounts/not-a-uuid/deposits", 400, "is not an account id"),
        ("DELETE", "/accounts", 405, "method 'DELETE' is not allowed"),
        ("PUT", "/health", 405, "use GET"),
        ("GET", "/events?after=-1", 400, "after must be a whole number"),
        ("GET", "/events?limit=0", 400, "limit must be from 1 to 1000"),
        ("GET", "/events?limit=abc", 400, "limit must be a whole number"),
        ("GET", "/accounts/" + "a" * 5000, 400, "is not an account id"),
        ("GET", "/accounts/%00", 400, "is not an account id"),
        ("GET", "/../../etc/passwd", 404, "no route"),
    ],
)
def test_bad_routes_and_parameters(client: Client, method: str, path: str, status: int, words: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert words in response.json["error"]  # type: ignore[index]


def test_unbuilt_application_answers_503_and_logs_the_cause(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No schema yet: every route but /health answers 503 with a stable reason (no path, no
    host); the log and the operator's /worker name the cause; /ready fails."""
    monkeypatch.setenv("UWSGI_ES_DATABASE_URL", f"sqlite:///{tmp_path}/unmigrated.sqlite3")
    client = Client(from_address(application, "127.0.0.1"))
    assert client.get("/health").status_code == 200
    for response in (
        client.get("/ready"),
        client.get(f"/accounts/{uuid4()}"),
        client.post("/accounts", json={"owner": "ann"}),
    ):
        assert response.status_code == 503
        assert response.json == {"error": "the event store is unavailable"}
        assert response.headers["Retry-After"] == "1"
    worker = client.get("/worker")
    assert worker.status_code == 503
    assert "uwsgi-es migrate" in worker.json["detail"]  # type: ignore[index]
    assert "uwsgi-es migrate" in caplog.text
    assert str(tmp_path) in caplog.text


def test_invalid_setting_answers_503_and_logs_the_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("UWSGI_ES_POOL_SIZE", "lots")
    response = Client(application).get("/ready")
    assert response.status_code == 503
    assert response.json == {"error": "the application is not ready in this worker"}
    assert "UWSGI_ES_POOL_SIZE='lots' is not a whole number" in caplog.text


@pytest.mark.parametrize(
    ("headers", "body", "status", "words"),
    [
        ({"Content-Encoding": "gzip"}, b'{"amount": 5}', 415, "must not be compressed"),
        ({"Content-Length": str(2**63)}, b"", 413, f"the body is {2**63} bytes; the limit is 65536"),
        ({"Content-Length": "1" + "0" * 30}, b"", 413, "the limit is 65536"),
        ({"Content-Length": "12abc"}, b"", 400, "is not a number of bytes"),
    ],
)
def test_bodies_are_refused_on_their_headers_before_reading(
    client: Client, headers: dict[str, str], body: bytes, status: int, words: str
) -> None:
    """Refused on what the headers declare: the body is never read (an honest 1 GiB upload, or a
    Content-Length of 2^63, costs nothing)."""
    account_id = open_account(client)

    class Unreadable:
        def read(self, *args: object) -> bytes:
            raise AssertionError("the body was read")

    environ = {"wsgi.input": Unreadable(), "CONTENT_TYPE": "application/json"}
    environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
    if "Content-Length" in headers:
        environ["CONTENT_LENGTH"] = headers["Content-Length"]
    response = client.post(f"/accounts/{account_id}/deposits", data=body, environ_overrides=environ)
    assert response.status_code == status, response.get_data(as_text=True)
    assert words in response.json["error"]  # type: ignore[index]
    assert client.get(f"/accounts/{account_id}").json["balance"] == 0  # type: ignore[index]


def test_a_lone_surrogate_in_client_input_still_gets_an_answer(client: Client) -> None:
    r"""{"amount": 1, "\ud800": 1}: the error names the unknown key, escaped, and can be written."""
    account_id = open_account(client)
    response = client.post(
        f"/accounts/{account_id}/deposits",
        data=b'{"amount": 1, "\\ud800": 1}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json["error"].startswith("unknown field(s): '\\ud800'")  # type: ignore[index]
    path = client.get(("/" + chr(0xDCFF)).encode("utf-8", "surrogateescape").decode("latin-1"))
    assert path.status_code == 404


@pytest.mark.parametrize(
    "raw",
    [
        "1_1_1_1_1_1_1_1_1_1_1_1_1_1_1_1",
        "{00000000-0000-0000-0000-000000000000}",
        "urn:uuid:00000000-0000-0000-0000-000000000000",
        "0000000000000000000000000000000g",
    ],
)
def test_ids_must_be_plain_uuids(client: Client, raw: str) -> None:
    """Python's UUID() also takes underscores, braces and urn:uuid: prefixes: those are 400, not 404."""
    response = client.get(f"/accounts/{raw}")
    assert response.status_code == 400
    assert "is not an account id" in response.json["error"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("owner", "code"),
    [("ann\x00", "U+0000"), ("ann\u202eevil", "U+202E"), ("\u2066ann", "U+2066"), ("a\nb", "U+000A")],
)
def test_owner_names_are_printable_text(client: Client, owner: str, code: str) -> None:
    response = post(client, "/accounts", {"owner": owner})
    assert response.status_code == 400
    assert f"control character {code}" in response.json["error"]  # type: ignore[index]
    assert stored_records(client) == 0


def test_an_accounts_events_come_in_pages(client: Client) -> None:
    """GET /accounts/{id}/events pages like /events: at most `limit` (default 100, up to 1000)
    events after version `after`, and `next_after` to ask for the next page."""
    account_id = open_account(client)
    for amount in range(1, 151):
        assert post(client, f"/accounts/{account_id}/deposits", {"amount": amount}).status_code == 200
    first = client.get(f"/accounts/{account_id}/events").json
    assert [e["version"] for e in first["events"]] == list(range(1, 101))  # type: ignore[index]
    assert first["next_after"] == 100  # type: ignore[index]
    rest = client.get(f"/accounts/{account_id}/events?after=100&limit=1000").json
    assert [e["version"] for e in rest["events"]] == list(range(101, 152))  # type: ignore[index]
    assert client.get(f"/accounts/{account_id}/events?after=151").json == {"events": [], "next_after": 151}
    assert client.get(f"/accounts/{account_id}/events?limit=1001").status_code == 400


def test_a_corrupt_row_is_named_and_passable_never_a_500(client: Client, sqlite_url: str) -> None:
    """Rows with invalid JSON or a topic of no known class: the feed lists them with an error
    naming why (so a consumer can pass them), and reading their aggregate is a 503 naming the
    position in the log, never a 500."""
    from sqlalchemy import create_engine, insert

    from uwsgi_es.stores.sqlalchemy import records_table

    account_id = open_account(client)
    other = uuid4()
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            insert(records_table),
            [
                {
                    "originator_id": UUID(account_id),
                    "originator_version": 2,
                    "topic": "x",
                    "state": "{not json",
                },
                {"originator_id": other, "originator_version": 1, "topic": "this:s", "state": "{}"},
            ],
        )
    engine.dispose()
    feed = client.get("/events").json["events"]  # type: ignore[index]
    assert [e.get("error", "") for e in feed][:1] == [""]
    assert feed[1]["error"].startswith("unreadable stored state")
    assert feed[1]["state"] is None
    assert (feed[2]["topic"], feed[2]["error"]) == (
        "this:s",
        "unknown topic: no event class of this application has it",
    )
    broken = client.get(f"/accounts/{account_id}")
    assert broken.status_code == 503
    assert broken.json == {"error": "a stored event cannot be read; an operator must repair it"}
    assert "Retry-After" not in broken.headers
    assert client.get(f"/accounts/{other}").status_code == 503
    assert client.get(f"/accounts/{account_id}/events").json["events"][1]["error"]  # type: ignore[index]


def test_request_scoped_session_is_released_after_errors(client: Client) -> None:
    """After a failing request nothing is checked out and no session lingers."""
    account_id = open_account(client)
    assert post(client, f"/accounts/{account_id}/withdrawals", {"amount": 99}).status_code == 409
    store = registry.get_application().records
    assert isinstance(store, SQLAlchemyRecordStore)
    assert not store.sessions.registry.has()
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_unexpected_errors_are_a_json_500_without_traceback() -> None:
    """The last line of defence: a bug gives a bare JSON 500; the traceback goes to the log."""
    api = JsonApi()

    @api.route("/boom", "GET")
    def boom(request: object) -> None:
        raise RuntimeError("secret internals")

    response = Client(api).get("/boom")
    assert response.status_code == 500
    assert response.json == {"error": "internal error; the server log has the details"}
