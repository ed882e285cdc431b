"""The bank example's JSON API: its routes on ``JsonApi``, served by ``uwsgi_es.wsgi:application``.

Importing this module connects to nothing; the application is fetched per request from the
registry (built after the fork by the launch module, or on the first request elsewhere).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from uuid import UUID

import msgspec

from uwsgi_es.domain import resolve_topic
from uwsgi_es.errors import AggregateNotFoundError, TopicError, UnsupportedOperationError
from uwsgi_es.example.balances import Balances
from uwsgi_es.example.domain import MAX_AMOUNT, MAX_OWNER_LENGTH, BankAccounts
from uwsgi_es.readside import projected
from uwsgi_es.stores.base import StoredRecord
from uwsgi_es.web.api import JsonApi
from uwsgi_es.web.bodies import BadRequestError, expect_fields, int_param
from uwsgi_es.web.http import Request, Response
from uwsgi_es.web.responses import json_response
from uwsgi_es.web.text import client_text, quoted

api = JsonApi(BankAccounts)
MAX_PAGE_LIMIT = 1000
DEFAULT_PAGE_LIMIT = 100
# The two spellings of a UUID we accept; Python's UUID() also takes underscores, braces, "urn:uuid:".
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
# Characters that reorder or hide text when displayed (bidirectional embeddings, overrides, isolates).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Never in a name: line and paragraph separators (a new line to many readers) and the byte order mark.
_NEVER_IN_A_NAME = frozenset("\u2028\u2029\ufeff")
# Letters that display as nothing (Hangul fillers): a name of them alone is as invisible as one of
# format characters (category Cf: zero-width spaces and joiners) or spaces.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
AMOUNT_ECHOED = 24  # characters of a refused amount repeated in the error


def bank(request: Request) -> BankAccounts:
    app = api.application(request)
    if not isinstance(app, BankAccounts):
        raise BadRequestError(f"this server runs {type(app).__qualname__}, not the bank example", 404)
    return app


def account_id_of(raw: str) -> UUID:
    if not _UUID.fullmatch(raw):
        raise BadRequestError(f"{quoted(raw, 100)} is not an account id: ids are UUIDs")
    return UUID(raw)


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
    for character in owner:
        category = unicodedata.category(character)
        if category == "Cs":
            raise BadRequestError("owner contains an unpaired surrogate, which is not valid Unicode")
        if category == "Cc" or character in _BIDI_CONTROLS:
            raise BadRequestError(
                f"owner contains the control character U+{ord(character):04X}: names are printable text"
            )
        if character in _NEVER_IN_A_NAME or _is_noncharacter(character):
            raise BadRequestError(
                f"owner contains U+{ord(character):04X} ({_kind_of(character)}), which is never part "
                "of a name"
            )
    if all(_invisible(character) for character in owner):
        raise BadRequestError(
            f"owner is made only of invisible characters (the first is U+{ord(owner[0]):04X}): a name "
            "needs at least one visible character"
        )
    return owner


def _is_noncharacter(character: str) -> bool:
    """Unicode's 66 noncharacters: U+FDD0..U+FDEF and the last two code points of every plane."""
    code = ord(character)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def _kind_of(character: str) -> str:
    if character == "\ufeff":
        return "a byte order mark"
    if character in "\u2028\u2029":
        return "a line or paragraph separator"
    return "a noncharacter"


def _invisible(character: str) -> bool:
    return unicodedata.category(character) in ("Cf", "Zs", "Zl", "Zp") or character in _BLANK_LETTERS


def amount_of(body: dict[str, Any]) -> int:
    expect_fields(body, ["amount"])
    amount = body["amount"]
    if type(amount) is not int:  # bool is an int subclass: refuse it too
        kind = "a boolean" if isinstance(amount, bool) else type(amount).__name__
        raise BadRequestError(f"amount must be a whole number of cents, not {kind}")
    if not 0 < amount <= MAX_AMOUNT:
        raise BadRequestError(
            f"amount must be between 1 and {MAX_AMOUNT} cents, got {client_text(str(amount), AMOUNT_ECHOED)}"
        )
    return amount


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


def _offset_form(timestamp: Any) -> Any:
    """Timestamps are stored in RFC 3339's "Z" form; the API has always said "+00:00"."""
    if isinstance(timestamp, str) and timestamp.endswith("Z"):
        return timestamp[:-1] + "+00:00"
    return timestamp


def event_entry(record: StoredRecord) -> dict[str, Any]:
    """One stored event as JSON. A row that cannot be read is listed as it is, with ``error``
    saying why, instead of failing the whole page: consumers see it, can stop or pass it, and
    the operator learns its position (docs/RELIABILITY.md, "corrupt rows")."""
    entry: dict[str, Any] = {"version": record.originator_version, "topic": record.topic}
    try:
        state = msgspec.json.decode(record.state)
        if not isinstance(state, dict):
            raise TypeError(f"the state is {type(state).__name__}, not an object")
    except (msgspec.DecodeError, TypeError) as exc:
        entry.update(timestamp=None, state=None, error=f"unreadable stored state: {exc}")
        return entry
    entry.update(timestamp=_offset_form(state.pop("timestamp", None)), state=state)
    try:
        resolve_topic(record.topic)
    except TopicError:
        entry["error"] = "unknown topic: no event class of this application has it"
    return entry


@api.route("/accounts/<account_id>/events", "GET")
def account_events(request: Request, account_id: str) -> Response:
    """One account's events after version ``after``, at most ``limit`` (a page, like ``/events``)."""
    key = account_id_of(account_id)
    after = int_param(request, "after", 0, 0, 2**63 - 1)
    limit = int_param(request, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
    records = bank(request).records.select(key, after_version=after, limit=limit)
    if not records and after == 0:
        raise AggregateNotFoundError(f"No BankAccount with id {key} is stored.")
    events = [event_entry(record) for record in records]
    last = records[-1].originator_version if records else after
    return json_response({"events": events, "next_after": last})


@api.route("/events", "GET")
def event_feed(request: Request) -> Response:
    """Every stored event after position ``after``, in the order they were stored."""
    after = int_param(request, "after", 0, 0, 2**63 - 1)
    limit = int_param(request, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
    feed = bank(request).feed
    if feed is None:
        raise UnsupportedOperationError(
            "This deployment's event store keeps no global order of events (Cassandra), so there is "
            "no event feed; read the events of one account instead."
        )
    records = feed.select_all(after, limit)
    events = [
        {"id": record.id, "originator_id": str(record.originator_id), **event_entry(record)}
        for record in records
    ]
    last = records[-1].id if records else after
    return json_response({"events": events, "next_after": last})


@api.route("/balances", "GET")
def balances(request: Request) -> Response:
    """The read model: the ``top`` largest balances (default 10), as the balances projection has
    them; ``X-Min-Position`` waits until it has applied that position (read your writes)."""
    app, top = bank(request), int_param(request, "top", 10, 1, MAX_PAGE_LIMIT)
    with projected(app, Balances, api.min_position(request)) as connection:
        return json_response({"balances": Balances.top(connection, top)})


@api.route("/balances/<account_id>", "GET")
def balance(request: Request, account_id: str) -> Response:
    """One account in the read model (``X-Min-Position`` as for ``/balances``)."""
    app, key = bank(request), account_id_of(account_id)
    with projected(app, Balances, api.min_position(request)) as connection:
        found = Balances.one(connection, key)
    if found is None:
        raise AggregateNotFoundError(f"No account {key} in the balances read model (yet).")
    return json_response(found)
