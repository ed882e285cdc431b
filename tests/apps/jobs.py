"""Background jobs for the RQ and Celery tests: each deposits and reports which process built what."""

from __future__ import annotations

import os
from uuid import UUID

from celery import Celery

from uwsgi_es import get_application_lazily
from uwsgi_es.application import constructions_in_this_process
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.servers import celery as celery_adapter


def report(balance: int) -> dict[str, int]:
    app = get_application_lazily(BankAccounts)
    return {
        "pid": os.getpid(),
        "built_in_pid": app.built_in_pid,
        "constructions": constructions_in_this_process(),
        "subscriptions": app.bus.count_persistence_subscriptions(),
        "balance": balance,
    }


def rq_deposit(account_id: str, amount: int) -> dict[str, int]:
    """An RQ job: the lazy getter builds this process's application on first use."""
    app = get_application_lazily(BankAccounts)
    assert isinstance(app, BankAccounts)
    return report(app.deposit(UUID(account_id), amount).balance)


celery_app = Celery("uwsgi_es_tests", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
celery_app.conf.result_backend = os.environ.get("CELERY_RESULT_BACKEND", "cache+memory://")
celery_adapter.connect(factory=BankAccounts)


@celery_app.task(name="tests.deposit")
def celery_deposit(account_id: str, amount: int) -> dict[str, int]:
    app = celery_adapter.get_application()
    assert isinstance(app, BankAccounts)
    return report(app.deposit(UUID(account_id), amount).balance)
