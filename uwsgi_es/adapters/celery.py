"""Celery: one application per pool process, built in ``worker_process_init``, lazily as a fallback.

Celery's prefork pool forks its processes from the worker's main process, which never runs tasks.
``worker_process_init`` builds the application in each pool process after the fork. Celery kills a
process whose ``worker_process_init`` handlers block for more than 4 s, so a slow first connection
must not be waited for there: a failed or skipped build is retried lazily in ``task_prerun``, and
tasks use ``get_application()`` (the lazy getter) either way. ``worker_process_shutdown`` closes it.

    from celery import Celery
    from uwsgi_es.adapters.celery import connect, get_application

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

from uwsgi_es import registry
from uwsgi_es.application import Application
from uwsgi_es.registry import ApplicationFactory

log = logging.getLogger(__name__)
_factory: ApplicationFactory | None = None


def connect(factory: ApplicationFactory | None = None) -> None:
    """Connect the build, the lazy fallback and the close to Celery's signals (once per process)."""
    global _factory
    _factory = factory
    worker_process_init.connect(_build, weak=False, dispatch_uid="uwsgi_es.build")
    task_prerun.connect(_ensure, weak=False, dispatch_uid="uwsgi_es.ensure")
    worker_process_shutdown.connect(_close, weak=False, dispatch_uid="uwsgi_es.close")


def get_application() -> Application:
    """This pool process's application, for use inside tasks."""
    return registry.get_application_lazily(_factory)


def _build(**_: Any) -> None:
    registry.freeze_inherited_objects()
    try:
        app = registry.init_application(_factory)
    except Exception as exc:  # never block or kill the pool process: task_prerun retries lazily
        log.error(
            "uwsgi_es: pool process %d could not build its application: %s: %s",
            os.getpid(),
            type(exc).__name__,
            exc,
        )
        return
    log.info(
        "uwsgi_es: pool process %d built %s on %s",
        os.getpid(),
        type(app).__qualname__,
        app.records.describe(),
    )


def _ensure(**_: Any) -> None:
    try:
        get_application()
    except Exception as exc:  # the task itself will raise the same error, with its cause
        log.warning("uwsgi_es: no application in pool process %d yet: %s", os.getpid(), exc)


def _close(**_: Any) -> None:
    registry.close_application()
