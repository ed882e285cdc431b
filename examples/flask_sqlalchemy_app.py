"""The bank example in a Flask app that already uses Flask-SQLAlchemy: the event store shares its
engine and ``db.session``, so a view can write its own rows and events on one connection pool.

    uwsgi --ini uwsgi.ini --module examples.flask_sqlalchemy_app:app

Its own table is created once per deployment (as ours is by `uwsgi-es migrate`):
    python -c "from examples.flask_sqlalchemy_app import app, db; app.app_context().push(); db.create_all()"
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, select
from sqlalchemy.orm import Mapped, mapped_column

from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.integrations.flask import UwsgiEs
from uwsgi_es.settings import DEFAULT_DATABASE_URL
from uwsgi_es.web.ops import ready_report, worker_report

db = SQLAlchemy()
es = UwsgiEs()


class AuditEntry(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str]
    note: Mapped[str]


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("UWSGI_ES_DATABASE_URL", DEFAULT_DATABASE_URL)
    db.init_app(app)
    es.init_app(app, factory=BankAccounts, db=db, ops_routes=False)

    @app.get("/ready")
    def ready() -> Any:
        return jsonify(ready_report(es.application))

    @app.get("/worker")
    def worker() -> Any:
        application = es.application
        shares_engine = application.records.engine is db.engine  # type: ignore[attr-defined]
        return jsonify(worker_report(application) | {"shares_engine": shares_engine})

    @app.post("/accounts")
    def open_account() -> Any:
        bank: BankAccounts = es.application  # type: ignore[assignment]
        account = bank.open_account(str(request.get_json()["owner"]))
        db.session.add(AuditEntry(account_id=str(account.id), note="opened"))
        db.session.commit()
        return jsonify(account.as_dict()), 201

    @app.get("/accounts/<account_id>/audit")
    def audit(account_id: str) -> Any:
        count = db.session.execute(
            select(func.count()).where(AuditEntry.account_id == account_id)
        ).scalar_one()
        return jsonify(entries=count)

    return app


app = create_app()
