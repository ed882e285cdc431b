"""A test-only WSGI module: the bank API plus probes that look inside a worker.

``PROBE_BUILD_IN_MASTER=1`` makes the mistake PITFALLS 11 is about on purpose: it builds an
application in the uWSGI master at import time and leaves a pooled PostgreSQL connection open
there before the fork. The workers must never use it; the master's connection must survive them.
"""

from __future__ import annotations

import os
from uuid import UUID

from sqlalchemy import func, insert, select, text

from uwsgi_es import init_application
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore, records_table
from uwsgi_es.web.http import Request, Response
from uwsgi_es.web.responses import json_response
from uwsgi_es.wsgi import api, application

__all__ = ["application"]

PROBE_ORIGINATOR = UUID("00000000-0000-4000-8000-000000000001")


def _store(request: Request) -> SQLAlchemyRecordStore:
    store = api.application(request).records
    assert isinstance(store, SQLAlchemyRecordStore)
    return store


def _backend_pid(store: SQLAlchemyRecordStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


@api.route("/probe/backend", "GET")
def backend(request: Request) -> Response:
    """This worker's own PostgreSQL backend pid."""
    return json_response({"pid": os.getpid(), "backend_pid": _backend_pid(_store(request))})


@api.route("/probe/fail-mid-transaction", "POST")
def fail_mid_transaction(request: Request) -> Response:
    """Insert a row in the request's session, then fail before committing."""
    session = _store(request).sessions()
    session.execute(
        insert(records_table).values(
            originator_id=PROBE_ORIGINATOR, originator_version=1, topic="probe", state="{}"
        )
    )
    raise RuntimeError("probe: failing mid-transaction on purpose")


@api.route("/probe/leftovers", "GET")
def leftovers(request: Request) -> Response:
    """What a previous request left behind: an open transaction, checked-out connections, rows."""
    store = _store(request)
    session = store.sessions()
    in_transaction = session.in_transaction()
    checked_out = store.pool_status()["checked_out"]
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(func.count())
            .select_from(records_table)
            .where(records_table.c.originator_id == PROBE_ORIGINATOR)
        ).scalar_one()
    return json_response(
        {"pid": os.getpid(), "in_transaction": in_transaction, "checked_out": checked_out, "probe_rows": rows}
    )


if os.environ.get("PROBE_BUILD_IN_MASTER"):
    master_app = init_application(BankAccounts)
    master_store = master_app.records
    assert isinstance(master_store, SQLAlchemyRecordStore)
    # The connection stays open in the master's pool, its socket inherited by every worker.
    print(f"probe: master {os.getpid()} holds backend {_backend_pid(master_store)}", flush=True)
