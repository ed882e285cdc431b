"""A test-only WSGI module: the library-written bank, plus a probe of the worker's PostgreSQL backend.

``PROBE_BUILD_IN_MASTER=1`` makes the mistake the library's own examples make under a pre-forking
server: it builds the application at import time, in the uWSGI master, and opens its connection
pool there before the fork. The workers must never use it, nor close it: the master's backend must
outlive them all.
"""

from __future__ import annotations

import os

from examples.eventsourcing_bank.api import api, bank
from examples.eventsourcing_bank.application import BankAccounts
from examples.eventsourcing_bank.wsgi import application
from uwsgi_es import init_application
from uwsgi_es.web.http import Request, Response
from uwsgi_es.web.responses import json_response

__all__ = ["application"]


def backend_pid(app: BankAccounts) -> int:
    with app.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
        cursor.execute("SELECT pg_backend_pid() AS pid")
        return int(cursor.fetchone()["pid"])


@api.route("/probe/backend", "GET")
def backend(request: Request) -> Response:
    """This worker's own PostgreSQL backend pid, through the library's pool."""
    return json_response({"pid": os.getpid(), "backend_pid": backend_pid(bank(request))})


if os.environ.get("PROBE_BUILD_IN_MASTER"):
    master_app = init_application(BankAccounts)
    print(f"probe: master {os.getpid()} holds backend {backend_pid(master_app)}", flush=True)
