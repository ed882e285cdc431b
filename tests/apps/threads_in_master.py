"""The example API, plus a thread started at import: in prefork mode it runs in the uWSGI master,
and every worker forked while it runs inherits what it held (uwsgi_es names it in each worker)."""

from __future__ import annotations

import threading
import time

from uwsgi_es.wsgi import application


def tick() -> None:
    while True:
        time.sleep(1.0)


threading.Thread(target=tick, name="ticker", daemon=True).start()

__all__ = ["application"]
