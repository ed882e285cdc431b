"""gunicorn: one application per worker, built after the fork, with or without ``--preload``.

gunicorn's process model is the reverse of uWSGI's: by default each worker imports the app after
the fork, so the lazy getter alone would already be correct; with ``--preload`` the master imports
it before forking. Either way ``post_fork`` builds the application eagerly in every worker (so the
first request does not pay for it and a failure is logged at once), and ``worker_exit`` closes it.
Use them from your gunicorn config file (deploy/gunicorn.conf.py is a complete one)::

    from uwsgi_es.adapters.gunicorn import post_fork, worker_exit
"""

from __future__ import annotations

import os
from typing import Any

from uwsgi_es import registry
from uwsgi_es.errors import ApplicationAlreadyInitialisedError


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn server hook: build this worker's application (never raises into gunicorn)."""
    registry.freeze_inherited_objects()
    try:
        app = registry.init_application()
    except ApplicationAlreadyInitialisedError:
        return
    except Exception as exc:
        server.log.error(
            "uwsgi_es: worker pid %d could not build its application: %s: %s. It answers 503 and "
            "retries with back-off.",
            os.getpid(),
            type(exc).__name__,
            exc,
        )
        return
    server.log.info(
        "uwsgi_es: worker pid %d built %s on %s", os.getpid(), type(app).__qualname__, app.records.describe()
    )


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn server hook: close this worker's application (engine disposed, cluster shut down)."""
    registry.close_application()
    server.log.info("uwsgi_es: worker pid %d closed its application", os.getpid())
