"""``uwsgi_es.wsgi:application`` — the bank-accounts example served as JSON over WSGI.

Importing this module connects to nothing. ``hooks.install()`` arranges for the application to be
built after the fork in each uWSGI worker (or right away under lazy-apps); outside uWSGI it is
built on the first request. Launch it by module name (``module = uwsgi_es.wsgi:application``),
never with ``wsgi-file``, which imports it a second time under another name.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from werkzeug.wrappers import Request, Response

from uwsgi_es import hooks
from uwsgi_es.bank import MAX_AMOUNT, MAX_OWNER_LENGTH, BankAccounts
from uwsgi_es.errors import AggregateNotFoundError
from uwsgi_es.web import BadRequestError, JsonApi, expect_fields, json_response

api = JsonApi(BankAccounts)
MAX_FEED_LIMIT = 1000


def bank(request: Request) -> BankAccounts:
    app = api.application(request)
    if not isinstance(app, BankAccounts):
        raise BadRequestError(f"this server runs {type(app).__qualname__}, not the bank example", 404)
    return app


def account_id_of(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise BadRequestError(f"{raw[:100]!r} is not an account id: ids are UUIDs") from None


def owner_of(body: dict[str, Any]) -> str:
    expect_fields(body, ["owner"])
    owner = body["owner"]
    if not isinstance(owner, str):
        raise BadRequestError("owner must be a string")
    owner = owner.strip()
    if not owner:
        raise BadRequestError("owner must not be empty")
    if len(owner) > MAX_OWNER_LENGTH:
        raise BadRequestError(f"owner is longer than {MAX_OWNER_LENGTH} characters")
    try:
        owner.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequestError("owner contains an unpaired surrogate, which is not valid Unicode") from None
    return owner


def amount_of(body: dict[str, Any]) -> int:
    expect_fields(body, ["amount"])
    amount = body["amount"]
    if type(amount) is not int:  # bool is an int subclass: refuse it too
        kind = "a boolean" if isinstance(amount, bool) else type(amount).__name__
        raise BadRequestError(f"amount must be a whole number of cents, not {kind}")
    if not 0 < amount <= MAX_AMOUNT:
        raise BadRequestError(f"amount must be between 1 and {MAX_AMOUNT} cents, got {amount}")
    return amount


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise BadRequestError(f"query parameter {name} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequestError(f"query parameter {name} must be from {low} to {high}, got {value}")
    return value


@api.route("/accounts", "POST")
def open_account(request: Request) -> Response:
    app = bank(request)
    account = app.open_account(owner_of(api.body(request)))
    return json_response(account.as_dict(), 201, {"Location": f"/accounts/{account.id}"})


@api.route("/accounts/<account_id>", "GET")
def get_account(request: Request, account_id: str) -> Response:
    return json_response(bank(request).get_account(account_id_of(account_id)).as_dict())


@api.route("/accounts/<account_id>/deposits", "POST")
def deposit(request: Request, account_id: str) -> Response:
    app, key = bank(request), account_id_of(account_id)
    return json_response(app.deposit(key, amount_of(api.body(request))).as_dict())


@api.route("/accounts/<account_id>/withdrawals", "POST")
def withdraw(request: Request, account_id: str) -> Response:
    app, key = bank(request), account_id_of(account_id)
    return json_response(app.withdraw(key, amount_of(api.body(request))).as_dict())


@api.route("/accounts/<account_id>/events", "GET")
def account_events(request: Request, account_id: str) -> Response:
    key = account_id_of(account_id)
    records = bank(request).records.select(key)
    if not records:
        raise AggregateNotFoundError(f"No BankAccount with id {key} is stored.")
    events = []
    for record in records:
        state = orjson.loads(record.state)
        timestamp = state.pop("timestamp", None)
        events.append(
            {
                "version": record.originator_version,
                "topic": record.topic,
                "timestamp": timestamp,
                "state": state,
            }
        )
    return json_response({"events": events})


@api.route("/events", "GET")
def event_feed(request: Request) -> Response:
    """Every stored event after position ``after``, in the order they were stored."""
    after = int_param(request, "after", 0, 0, 2**63 - 1)
    limit = int_param(request, "limit", 100, 1, MAX_FEED_LIMIT)
    records = bank(request).records.select_all(after, limit)
    events = []
    for record in records:
        state = orjson.loads(record.state)
        events.append(
            {
                "id": record.id,
                "originator_id": str(record.originator_id),
                "version": record.originator_version,
                "topic": record.topic,
                "timestamp": state.pop("timestamp", None),
                "state": state,
            }
        )
    last = records[-1].id if records else after
    return json_response({"events": events, "next_after": last})


hooks.install(BankAccounts)
application = api
