"""gunicorn: one application per worker, built after the fork, with or without ``--preload``.

gunicorn's process model is the reverse of uWSGI's: by default each worker imports the app after
the fork, so the lazy getter alone would already be correct; with ``--preload`` the master imports
it before forking. Either way ``post_fork`` builds the application eagerly in every worker (so the
first request does not pay for it and a failure is logged at once), and ``worker_exit`` closes it.
Use them from your gunicorn config file (deploy/gunicorn.conf.py is a complete one)::

    from uwsgi_es.servers.gunicorn import post_fork, worker_exit

The application is the one ``UWSGI_ES_APPLICATION`` names (gunicorn's ``post_fork`` runs before a
default, non-preloaded worker imports your module, so a factory passed there comes too late).
"""

from __future__ import annotations

from typing import Any

from uwsgi_es.lifecycle import build
from uwsgi_es.runtime.log import configure_logging


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn server hook: build this worker's application (never raises into gunicorn)."""
    configure_logging()
    build.build_in_this_process()


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn server hook: close this worker's application (engine disposed, cluster shut down)."""
    build.close_in_this_process()
