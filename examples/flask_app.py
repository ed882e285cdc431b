"""The bank example as a Flask app factory, served under uWSGI (`module = examples.flask_app:app`).

Flask owns routing and errors here; uwsgi_es owns the application's life: one per worker, built
after the fork, its store session ended at each request's teardown.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Flask, jsonify, request

from uwsgi_es import AggregateNotFoundError, UwsgiEsError
from uwsgi_es.adapters.flask import UwsgiEs
from uwsgi_es.bank import BankAccounts

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

    @app.post("/accounts/<uuid:account_id>/deposits")
    def deposit(account_id: UUID) -> Any:
        bank: BankAccounts = es.application  # type: ignore[assignment]
        body = request.get_json(silent=True)
        amount = body.get("amount") if isinstance(body, dict) else None
        if type(amount) is not int or amount <= 0:
            return jsonify(error="amount must be a positive whole number of cents"), 400
        return jsonify(bank.deposit(account_id, amount).as_dict())

    @app.errorhandler(AggregateNotFoundError)
    def not_found(error: AggregateNotFoundError) -> Any:
        return jsonify(error=str(error)), 404

    @app.errorhandler(UwsgiEsError)
    def unavailable(error: UwsgiEsError) -> Any:
        return jsonify(error=str(error)), 503

    return app


app = create_app()
