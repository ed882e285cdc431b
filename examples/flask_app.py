"""The bank example as a Flask app factory, served under uWSGI (`module = examples.flask_app:app`).

Flask owns routing here; uwsgi_es owns the application's life (one per worker, built after the
fork, its store session ended at each request's teardown) and answers its errors with the same
statuses as the JSON API: an unknown account is 404, a refused withdrawal 409, an outage 503.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Flask, jsonify, request

from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.integrations.flask import UwsgiEs

es = UwsgiEs()


def create_app() -> Flask:
    app = Flask(__name__)
    es.init_app(app, factory=BankAccounts)  # also adds /ready and /worker

    @app.post("/accounts")
    def open_account() -> Any:
        bank: BankAccounts = es.application  # type: ignore[assignment]
        body = request.get_json(silent=True)
        owner = body.get("owner") if isinstance(body, dict) else None
        if not isinstance(owner, str) or not owner.strip():
            return jsonify(error="send a JSON object with a non-empty string owner"), 400
        return jsonify(bank.open_account(owner.strip()).as_dict()), 201

    @app.post("/accounts/<uuid:account_id>/<any(deposits, withdrawals):movement>")
    def move(account_id: UUID, movement: str) -> Any:
        bank: BankAccounts = es.application  # type: ignore[assignment]
        body = request.get_json(silent=True)
        amount = body.get("amount") if isinstance(body, dict) else None
        if type(amount) is not int or amount <= 0:
            return jsonify(error="amount must be a positive whole number of cents"), 400
        command = bank.deposit if movement == "deposits" else bank.withdraw
        return jsonify(command(account_id, amount).as_dict())

    return app


app = create_app()
