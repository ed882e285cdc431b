"""The JSON API of the library-written bank: the same routes and the same strict input rules as
uwsgi_es's own example (``uwsgi_es.example.api``), on ``JsonApi``, whose ``/health``, ``/ready``
and ``/worker`` host any application the registry can."""

from __future__ import annotations

from examples.eventsourcing_bank.application import BankAccounts
from examples.eventsourcing_bank.projections import BalancesView
from uwsgi_es.errors import AggregateNotFoundError
from uwsgi_es.example.api import account_id_of, amount_of, owner_of
from uwsgi_es.integrations.eventsourcing import read_view
from uwsgi_es.integrations.eventsourcing.notification_log import mount
from uwsgi_es.web.api import JsonApi
from uwsgi_es.web.bodies import BadRequestError, int_param
from uwsgi_es.web.http import Request, Response
from uwsgi_es.web.responses import json_response

api = JsonApi(BankAccounts)
mount(api)  # GET /notifications/<first>,<last>: the log a follower in another service follows
HEADERS = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def bank(request: Request) -> BankAccounts:
    app = api.application(request)
    if not isinstance(app, BankAccounts):
        raise BadRequestError(f"this server runs {type(app).__qualname__}, not the bank example", 404)
    return app


@api.route("/accounts", "POST")
def open_account(request: Request) -> Response:
    account = bank(request).open_account(owner_of(api.body(request)))
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
    """One account's events after version ``after`` (a page, at most ``limit``)."""
    key = account_id_of(account_id)
    after = int_param(request, "after", 0, 0, 2**63 - 1)
    limit = int_param(request, "limit", 100, 1, 1000)
    found = list(bank(request).events.get(key, gt=after or None, limit=limit))
    if not found and after == 0:
        raise AggregateNotFoundError(f"No BankAccount with id {key} is stored.")
    events = [
        {
            "version": e.originator_version,
            "topic": f"{type(e).__module__}:{type(e).__qualname__}",
            "state": {k: v for k, v in vars(e).items() if k not in HEADERS},
        }
        for e in found
    ]
    return json_response({"events": events, "next_after": found[-1].originator_version if found else after})


@api.route("/events", "GET")
def notifications(request: Request) -> Response:
    """The application's notification log after position ``after``: every event, in order."""
    after = int_param(request, "after", 0, 0, 2**63 - 1)
    limit = int_param(request, "limit", 100, 1, 1000)
    found = bank(request).recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
    events = [
        {"id": n.id, "originator_id": str(n.originator_id), "version": n.originator_version, "topic": n.topic}
        for n in found
    ]
    return json_response({"events": events, "next_after": found[-1].id if found else after})


@api.route("/balances/<account_id>", "GET")
def balance(request: Request, account_id: str) -> Response:
    """The account's balance from the balances view (kept by its runner mule). A read sending a
    write's ``X-Event-Position`` back as ``X-Min-Position`` sees that write, or gets a 503 naming
    the lag after ``UWSGI_ES_READ_WAIT``."""
    key = account_id_of(account_id)
    with read_view(bank(request), "balances", api.min_position(request), api.settings()) as view:
        row = view.balance_of(key) if isinstance(view, BalancesView) else None
    if row is None:
        raise AggregateNotFoundError(f"The balances view has no account {key}.")
    return json_response(row)
