"""A small JSON-over-WSGI layer on Werkzeug: routing, strict body parsing, errors as JSON, and the
operational routes (``/health``, ``/ready``, ``/worker``) every uwsgi_es service has.

Rules it keeps for every request:

- Bad input gets a 4xx ``{"error": "..."}`` naming the problem; nothing stored changes.
- Our errors map to statuses in one table (``_STATUS``); an unexpected exception is logged with its
  traceback and answered with a bare JSON 500, never a traceback.
- Whatever a request held in the store (its SQLAlchemy session) is released when it ends, also
  after an error, because the response is built completely before it is returned.
- The application is fetched per request from the registry, never captured at import time.

Request bodies are parsed with the standard library's ``json`` because it can refuse duplicate keys
and NaN/Infinity (orjson silently keeps the last duplicate); responses are written with orjson.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from uwsgi_es import hooks, registry
from uwsgi_es.application import Application, constructions_in_this_process
from uwsgi_es.errors import (
    AggregateNotFoundError,
    ApplicationClosedError,
    ApplicationNotInitialisedError,
    CommandRejectedError,
    ConcurrencyError,
    ConfigurationError,
    ForkedApplicationError,
    InitialisationFailedError,
    StoreUnavailableError,
    UnsupportedOperationError,
    UwsgiEsError,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

_APP_KEY = "uwsgi_es.application"
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (AggregateNotFoundError, 404),
    (CommandRejectedError, 409),
    (ConcurrencyError, 409),
    (StoreUnavailableError, 503),
    (InitialisationFailedError, 503),
    (ApplicationNotInitialisedError, 503),
    (ForkedApplicationError, 503),
    (ApplicationClosedError, 503),
    (ConfigurationError, 503),
    (UnsupportedOperationError, 404),  # not a server fault: this deployment has no such resource
)

Handler = Callable[..., Response]


class BadRequestError(UwsgiEsError):
    """The request is malformed; ``status`` says which 4xx (400 unless given)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, headers=headers, mimetype="application/json")


def error_response(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequestError(f"the JSON body repeats the key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BadRequestError(f"the JSON body contains {name}, which is not valid JSON")


def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or a ``BadRequestError`` (400, 413 or 415) saying what is wrong."""
    if request.mimetype != "application/json":
        got = request.mimetype or "no Content-Type"
        raise BadRequestError(f"send the body as JSON with Content-Type: application/json (got {got})", 415)
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BadRequestError(f"the body is {length} bytes; the limit is {max_bytes}", 413)
    request.max_content_length = max_bytes
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise BadRequestError(f"the body is larger than the limit of {max_bytes} bytes", 413) from None
    if not raw:
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            raise BadRequestError("chunked request bodies are not supported: send a Content-Length", 411)
        raise BadRequestError("the body is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadRequestError("the JSON body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit conversion limit
        raise BadRequestError(f"the JSON body holds a value that cannot be read: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object, not {_json_type(body)}")
    return body


def _shorten(text: str, limit: int = 200) -> str:
    """Quote client input back in errors without echoing megabytes."""
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def expect_fields(body: Mapping[str, Any], required: Iterable[str]) -> None:
    """Refuse missing and unknown fields, naming them."""
    wanted = list(required)
    missing = [name for name in wanted if name not in body]
    if missing:
        raise BadRequestError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - set(wanted))
    if unknown:
        raise BadRequestError(f"unknown field(s): {', '.join(unknown)}; expected: {', '.join(wanted)}")


class JsonApi:
    """A WSGI callable dispatching Werkzeug rules to handlers that return JSON responses.

    ``factory`` builds this process's application on first use when no post-fork hook has
    (default: the ``UWSGI_ES_APPLICATION`` setting).
    """

    def __init__(self, factory: registry.ApplicationFactory | None = None) -> None:
        self.factory = factory
        self.url_map = Map(strict_slashes=False, merge_slashes=False)
        self.handlers: dict[str, Handler] = {}
        self.route("/health", "GET")(self.health)
        self.route("/ready", "GET")(self.ready)
        self.route("/worker", "GET")(self.worker)

    def route(self, path: str, *methods: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            endpoint = f"{handler.__name__}:{path}"
            self.url_map.add(Rule(path, methods=list(methods), endpoint=endpoint))
            self.handlers[endpoint] = handler
            return handler

        return register

    def application(self, request: Request) -> Application:
        """This worker's application (built on first use), remembered to release after the request."""
        app = registry.get_application_lazily(self.factory)
        request.environ[_APP_KEY] = app
        return app

    def body(self, request: Request) -> dict[str, Any]:
        """The JSON object body, within the application's ``max_body_bytes``."""
        return read_json_object(request, self.application(request).settings.max_body_bytes)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        finally:
            app = environ.get(_APP_KEY)
            if app is not None:
                app.records.end_request()
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        try:
            endpoint, arguments = self.url_map.bind_to_environ(request.environ).match()
            return self.handlers[endpoint](request, **arguments)
        except BadRequestError as exc:
            return error_response(str(exc), exc.status)
        except NotFound:
            return error_response(f"no route for {_shorten(request.path)!r}", 404)
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or ()))
            method, path = _shorten(request.method), _shorten(request.path)
            return error_response(
                f"method {method} is not allowed on {path!r}; use {allowed}",
                405,
                {"Allow": allowed},
            )
        except HTTPException as exc:
            return error_response(exc.description or exc.name, exc.code or 400)
        except Exception as exc:
            status = next((code for cls, code in _STATUS if isinstance(exc, cls)), None)
            if status is None:
                log.exception("unexpected error serving %s %s", request.method, request.path)
                return error_response("internal error; the server log has the details", 500)
            headers = {"Retry-After": "1"} if status == 503 else None
            return error_response(str(exc), status, headers)

    # The operational routes -------------------------------------------------------------------

    def health(self, request: Request) -> Response:
        """Liveness: the process answers. Touches no database."""
        return json_response({"status": "ok", "pid": os.getpid()})

    def ready(self, request: Request) -> Response:
        """Readiness: this worker's application is built and its store answers."""
        return json_response(ready_report(self.application(request)))

    def worker(self, request: Request) -> Response:
        """Which process answered, and what it built: how tests prove one application per worker."""
        return json_response(worker_report(self.application(request)))


def ready_report(app: Application) -> dict[str, Any]:
    """Ping the store (raising if it does not answer); the body of every adapter's ``/ready``."""
    app.records.ping()
    return {"status": "ready", "pid": os.getpid(), "worker_id": hooks.worker_id()}


def worker_report(app: Application) -> dict[str, Any]:
    """The body of every adapter's ``/worker``: which process answered and what it built."""
    return {
        "pid": os.getpid(),
        "built_in_pid": app.built_in_pid,
        "constructions": constructions_in_this_process(),
        "subscriptions": app.bus.count_persistence_subscriptions(),
        "worker_id": hooks.worker_id(),
        "conflicts": app.conflicts,
        "retries": app.retries,
        "pool": app.records.pool_status(),
        # Objects inherited from the master that the garbage collector leaves alone (UWSGI_ES_GC_FREEZE).
        "gc_frozen": gc.get_freeze_count(),
    }
