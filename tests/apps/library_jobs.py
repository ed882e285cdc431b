"""Background jobs on the library-written bank (examples/eventsourcing_bank) for the RQ and Celery
tests: each deposits and says which process built the application it used."""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from celery import Celery

from examples.eventsourcing_bank.application import BankAccounts
from uwsgi_es import get_application_lazily
from uwsgi_es.servers import celery as celery_adapter
from uwsgi_es.web.ops import worker_report


def deposit(app: Any, account_id: str, amount: int) -> dict[str, Any]:
    assert isinstance(app, BankAccounts)
    balance = app.deposit(UUID(account_id), amount).balance
    return {**worker_report(app), "balance": balance}


def rq_deposit(account_id: str, amount: int) -> dict[str, Any]:
    """An RQ job: the lazy getter builds this process's application on first use."""
    return deposit(get_application_lazily(BankAccounts), account_id, amount)


celery_app = Celery("uwsgi_es_library_tests", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
celery_app.conf.result_backend = os.environ.get("CELERY_RESULT_BACKEND", "cache+memory://")
celery_adapter.connect(factory=BankAccounts)


@celery_app.task(name="tests.library_deposit")
def celery_deposit(account_id: str, amount: int) -> dict[str, Any]:
    return deposit(celery_adapter.get_application(), account_id, amount)
