"""Each request's id and the log line of a slow one.

The id is the client's ``X-Request-ID`` when it is a plausible one (1 to 128 characters of
``A-Z a-z 0-9 . _ : -``: what tracing systems send, and nothing a log format must escape, so the id
can go into uWSGI's JSON request line as it is and never forge a field there), else one made
here, unique per process and cheap (a random prefix drawn once per process, then a counter),
which has that form too. It is echoed in the response, carried by every uwsgi_es log
line written while the request is served (``UWSGI_ES_LOG_FORMAT=json``), and handed to uWSGI's
request log as the logvars ``%(request_id)``, with ``%(json_uri)`` and ``%(json_method)``
escaped for a JSON log format (see uwsgi.ini).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import time

from uwsgi_es.runtime import log, process
from uwsgi_es.web.http import Request

REQUEST_ID_HEADER = "X-Request-ID"
MAX_LENGTH = 128
_PLAUSIBLE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")
_own: tuple[int, str, itertools.count[int]] | None = None  # (pid, prefix, counter)


def identify(request: Request, *, json_logs: bool) -> str:
    """The request's id: the client's if plausible, else a new one. With ``json_logs`` it is given
    to uWSGI's request log too, with the request line escaped for a JSON log format (work kept off
    the request path of deployments that log text)."""
    sent = request.headers.get(REQUEST_ID_HEADER)
    identity = sent if sent is not None and _plausible(sent) else _new_id()
    uwsgi = process.uwsgi
    if uwsgi is not None and json_logs:
        uwsgi.set_logvar("request_id", identity)
        uwsgi.set_logvar("json_uri", json.dumps(str(request.environ.get("REQUEST_URI", "")))[1:-1])
        uwsgi.set_logvar("json_method", json.dumps(request.method)[1:-1])
    return identity


def log_if_slow(request: Request, status: int, started: float, threshold_ms: int) -> None:
    """One ``event=slow_request`` line for a request slower than ``threshold_ms`` (0: never)."""
    elapsed = (time.monotonic() - started) * 1000
    if threshold_ms and elapsed >= threshold_ms:
        log.emit(
            "slow_request",
            logging.WARNING,
            method=request.method[:20],
            path=request.path[:200],
            status=status,
            ms=elapsed,
        )


def _plausible(sent: str) -> bool:
    return _PLAUSIBLE.fullmatch(sent) is not None


def _new_id() -> str:
    global _own
    if _own is None or _own[0] != os.getpid():  # drawn again after a fork: ids stay unique
        _own = (os.getpid(), secrets.token_hex(6), itertools.count(1))
    return f"{_own[1]}-{next(_own[2]):x}"
