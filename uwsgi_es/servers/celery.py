"""Celery: one application per pool process, built in ``worker_process_init``, lazily as a fallback.

Celery's prefork pool forks its processes from the worker's main process, which never runs tasks.
``worker_process_init`` builds the application in each pool process after the fork. Celery kills a
process whose ``worker_process_init`` handlers block for more than 4 s, so a slow first connection
must not be waited for there: a failed or skipped build is retried lazily in ``task_prerun``, and
tasks use ``get_application()`` (the lazy getter) either way. ``worker_process_shutdown`` closes it.

    from celery import Celery
    from uwsgi_es.servers.celery import connect, get_application

    app = Celery("tasks", broker="redis://localhost:6379/0")
    connect(factory=BankAccounts)

    @app.task
    def deposit(account_id, amount):
        return get_application().deposit(UUID(account_id), amount).balance
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import task_prerun, worker_process_init, worker_process_shutdown

from uwsgi_es.lifecycle import build, registry
from uwsgi_es.runtime.log import configure_logging

log = logging.getLogger(__name__)
_factory: registry.ApplicationFactory | None = None


def connect(factory: registry.ApplicationFactory | None = None) -> None:
    """Connect the build, the lazy fallback and the close to Celery's signals (once per process)."""
    global _factory
    _factory = factory
    worker_process_init.connect(_build, weak=False, dispatch_uid="uwsgi_es.build")
    task_prerun.connect(_ensure, weak=False, dispatch_uid="uwsgi_es.ensure")
    worker_process_shutdown.connect(_close, weak=False, dispatch_uid="uwsgi_es.close")


def get_application() -> Any:
    """This pool process's application, for use inside tasks."""
    return registry.get_application_lazily(_factory)


def _build(**_: Any) -> None:
    configure_logging()  # a no-op under Celery's own logging, which our events then go through
    build.build_in_this_process(_factory)  # never raises: task_prerun retries lazily


def _ensure(**_: Any) -> None:
    try:
        get_application()
    except Exception as exc:  # the task itself will raise the same error, with its cause
        log.warning("uwsgi_es: no application in pool process %d yet: %s", os.getpid(), exc)


def _close(**_: Any) -> None:
    build.close_in_this_process()
