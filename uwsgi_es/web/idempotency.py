"""Commands a client can safely retry: the ``Idempotency-Key`` request header on POST.

A client that sent a write and got no answer (a lost reply, a reload, a killed worker) cannot know
whether it was stored. Sent with a key, the request runs in one transaction that stores its events
*and* its answer under the key (``IdempotentWrites.remembering``); a repeat with the same key gets
that first answer (``Idempotent-Replayed: true``) and stores nothing. The key is bound to a digest
of the request (method, path and query, body): the same key with another request is refused with
422 naming it. Answers are kept ``UWSGI_ES_IDEMPOTENCY_TTL`` seconds. Only successful (2xx) answers
are remembered: a refused request stored nothing, so running it again is safe.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

import msgspec

from uwsgi_es.errors import DuplicateRequestError
from uwsgi_es.stores.base import IdempotentWrites
from uwsgi_es.web.bodies import BadRequestError, read_body
from uwsgi_es.web.http import Request, Response
from uwsgi_es.web.text import quoted

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Headers of the first answer that a replay repeats (not Date, Server, Content-Length...).
_KEPT_HEADERS = ("Content-Type", "Location", "X-Event-Position")


def key_of(request: Request) -> str | None:
    """The request's key (POST only), or a 400 naming what is wrong with it."""
    raw = request.headers.get(HEADER)
    if raw is None or request.method != "POST":
        return None
    if not raw or len(raw) > MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in raw) or raw != raw.strip():
        raise BadRequestError(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters without leading or "
            f"trailing spaces (a UUID is a good key), got {quoted(raw, 60)}"
        )
    return raw


def digest_of(request: Request, body: bytes) -> str:
    """What the key is bound to: the method, the path with its query, and the body."""
    target = request.full_path if request.query_string else request.path
    return hashlib.sha256(b"\0".join((request.method.encode(), target.encode(), body))).hexdigest()


def answer_idempotently(
    request: Request,
    handle: Callable[[], Response],
    *,
    store: Any,
    key: str,
    ttl: float,
    max_body_bytes: int,
    position: Callable[[], int | None],
) -> Response:
    """The first answer for ``key`` if there is one, else ``handle()`` run in a transaction that
    stores its answer with its events. ``position`` reads the request's feed position after it."""
    if not isinstance(store, IdempotentWrites):
        raise BadRequestError(
            f"{HEADER} needs a store that can keep an answer in the same transaction as its events "
            "(PostgreSQL or SQLite); this deployment's store cannot, so nothing was done. Send the "
            "request without the header.",
            422,
        )
    digest = digest_of(request, read_body(request.environ, max_body_bytes))
    since = time.time() - ttl
    remembered = store.recall(key, since)
    if remembered is not None:
        return _replay(key, digest, *remembered)
    try:
        with store.remembering(key, digest, since) as remember:
            response = handle()
            if 200 <= response.status_code < 300:
                remember(_serialise(response, position()))
    except DuplicateRequestError:
        remembered = store.recall(key, since)
        if remembered is None:  # expired between the two reads: nothing of this one was stored
            raise
        return _replay(key, digest, *remembered)
    return response


def _serialise(response: Response, position: int | None) -> str:
    headers = [(name, value) for name in _KEPT_HEADERS if (value := response.headers.get(name))]
    if position is not None:
        headers.append(("X-Event-Position", str(position)))
    body = base64.b64encode(response.get_data()).decode()  # any bytes, not only UTF-8 JSON
    return msgspec.json.encode({"status": response.status_code, "headers": headers, "body": body}).decode()


def _replay(key: str, digest: str, remembered_digest: str, answer: str) -> Response:
    if digest != remembered_digest:
        raise BadRequestError(
            f"{HEADER} {quoted(key, 60)} was already used for another request (a different method, "
            "path or body); send a new key with a new request",
            422,
        )
    first = msgspec.json.decode(answer)
    response = Response(base64.b64decode(first["body"]), first["status"], dict(first["headers"]))
    response.headers[REPLAYED_HEADER] = "true"
    return response
