"""Moved: the uWSGI integration is ``uwsgi_es.servers.uwsgi`` (``install``), the process facts are
``uwsgi_es.lifecycle.process``. ``from uwsgi_es import hooks; hooks.install(App)`` still works."""

from __future__ import annotations

from uwsgi_es.lifecycle.events import configure_logging
from uwsgi_es.lifecycle.process import in_uwsgi, process_count, thread_count, worker_id
from uwsgi_es.servers.uwsgi import FAILED_APP_EXIT_CODE, install

__all__ = [
    "FAILED_APP_EXIT_CODE",
    "configure_logging",
    "in_uwsgi",
    "install",
    "process_count",
    "thread_count",
    "worker_id",
]
