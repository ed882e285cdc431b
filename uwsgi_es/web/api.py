"""``JsonApi``: a small JSON-over-WSGI layer (``uwsgi_es.web.http``), with the operational routes
(``/health``, ``/ready``, ``/worker``) every uwsgi_es service has.

Rules it keeps for every request:

- Bad input gets a 4xx ``{"error": "..."}`` naming the problem; nothing stored changes.
- Our errors map to statuses in one table (``status.STATUS_OF``); a 5xx says only a stable reason,
  the details go to the log. An unexpected exception is logged with its traceback and answered
  with a bare JSON 500, never a traceback; and if even that answer cannot be built, a fixed one is.
- Whatever a request held in the store (its SQLAlchemy session) is released when it ends, also
  after an error, because the response is built completely before it is returned.
- The application is fetched per request from the registry, never captured at import time.
- A POST sent with an ``Idempotency-Key`` is answered once: a repeat gets the first answer and
  stores nothing (``uwsgi_es.web.idempotency``).
- A request that stored events answers the feed position of the last one (``X-Event-Position``);
  a read may ask for at least a position (``X-Min-Position``, see ``uwsgi_es.readside.status``).
- Its database work has a deadline: its arrival plus the store's lock bound, not counting the time
  it waits for its client's body (``uwsgi_es.stores.deadlines``). A request queued behind this
  worker's other database waits past it is answered 503 busy at once, and writes nothing.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from uwsgi_es.lifecycle import registry
from uwsgi_es.metrics import exposition, recorder
from uwsgi_es.runtime.log import request_id
from uwsgi_es.settings import Settings, resolve
from uwsgi_es.stores import deadlines, unit_of_work
from uwsgi_es.stores.base import IdempotentWrites, RequestScope
from uwsgi_es.web.bodies import BadRequestError, answered, read_body, read_json_object
from uwsgi_es.web.http import Handler, MethodNotAllowed, NotFound, Request, Response, Router
from uwsgi_es.web.idempotency import answer_idempotently, key_of
from uwsgi_es.web.ops import (
    failure_report,
    health_report,
    is_operator,
    projection_gauges,
    ready_report,
    worker_report,
)
from uwsgi_es.web.request_ids import REQUEST_ID_HEADER, identify, log_if_slow
from uwsgi_es.web.responses import error_response, json_response
from uwsgi_es.web.status import answer_for, log_refusal
from uwsgi_es.web.text import quoted

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("uwsgi_es.web")

_APP_KEY = "uwsgi_es.application"
# Read your writes: a write answers the feed position of its last event; a read of a projection
# may ask for at least that position (uwsgi_es.readside.status.projected).
POSITION_HEADER = "X-Event-Position"
MIN_POSITION_HEADER = "X-Min-Position"
_LAST_RESORT = b'{"error":"internal error; the server log has the details"}'


class JsonApi:
    """A WSGI callable dispatching routes to handlers that return JSON responses.

    ``factory`` builds this process's application (in registry slot ``name``) on first use when no
    post-fork hook has (default: the ``UWSGI_ES_APPLICATION`` setting). The application may be of
    any kind the registry hosts (ours, the eventsourcing library's).
    """

    def __init__(
        self, factory: registry.ApplicationFactory | None = None, *, name: str = registry.DEFAULT
    ) -> None:
        self.factory = factory
        self.name = name
        self.router = Router()
        self.handlers: dict[str, Handler] = {}
        self.routes: dict[str, str] = {}  # endpoint -> its path pattern
        self.route("/health", "GET")(self.health)
        self.route("/ready", "GET")(self.ready)
        self.route("/worker", "GET")(self.worker)
        self.route("/metrics", "GET")(self.metrics)

    def route(self, path: str, *methods: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            endpoint = f"{handler.__name__}:{path}"
            self.router.add(path, methods, endpoint)
            self.handlers[endpoint] = handler
            self.routes[endpoint] = path
            return handler

        return register

    def application(self, request: Request) -> Any:
        """This worker's application (built on first use), remembered to release after the request."""
        app = registry.get_application_lazily(self.factory, name=self.name)
        request.environ[_APP_KEY] = app
        return app

    def settings(self) -> Settings:
        """The settings this worker's application was built with (defaults before any build)."""
        return registry.settings_in_use(self.name) or _defaults()

    def body(self, request: Request) -> dict[str, Any]:
        """The JSON object body, within ``UWSGI_ES_MAX_BODY_BYTES``."""
        self.application(request)
        with deadlines.not_counted():  # waiting for the client is not waiting for the database
            return read_json_object(request, self.settings().max_body_bytes)

    @staticmethod
    def min_position(request: Request) -> int:
        """The feed position a read asks its projection to have reached (``X-Min-Position``, as a
        write answered it in ``X-Event-Position``); 0 when it asks for none."""
        raw = request.headers.get(MIN_POSITION_HEADER)
        if raw is None:
            return 0
        if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
            raise BadRequestError(
                f"{MIN_POSITION_HEADER} must be a feed position (a whole number), got {quoted(raw, 40)}"
            )
        return int(raw)

    def is_operator(self, request: Request) -> bool:
        return is_operator(request.environ, self.settings().operator_networks)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        started = time.monotonic()
        clock = deadlines.start()  # the deadline of its database work counts from its arrival
        settings = self.settings()
        identity = identify(request, json_logs=settings.log_format == "json")
        named = request_id.set(identity)
        try:
            with unit_of_work.begin():
                response = self.dispatch(request)
                position = unit_of_work.current().position
            if position is not None and response.status_code < 400:
                response.headers[POSITION_HEADER] = str(position)
            response.headers[REQUEST_ID_HEADER] = identity
            log_if_slow(request, response.status_code, started, settings.slow_request_ms)
            recorder.request_served(
                request.method, request.route, response.status_code, time.monotonic() - started
            )
        finally:
            deadlines.stop(clock)
            request_id.reset(named)
            app = environ.get(_APP_KEY)
            if app is not None and _is_request_scoped(type(app)):
                app.end_request()
        try:
            return answered(environ, response(environ, start_response))
        except Exception:  # a response that cannot be written must still be an answer
            log.exception("could not write the response to %s", quoted(request.path))
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [_LAST_RESORT]

    def dispatch(self, request: Request) -> Response:
        try:
            endpoint, arguments = self.router.match(request.method, request.path)
            handler = self.handlers[endpoint]
            request.route = self.routes[endpoint]
            key = key_of(request)
            if key is None:
                return handler(request, **arguments)
            app, settings = self.application(request), self.settings()
            if isinstance(getattr(app, "records", None), IdempotentWrites):
                with deadlines.not_counted():  # the body, whole, before its database work starts
                    read_body(request.environ, settings.max_body_bytes)
            return answer_idempotently(
                request,
                lambda: handler(request, **arguments),
                store=getattr(app, "records", None),
                key=key,
                ttl=settings.idempotency_ttl,
                max_body_bytes=settings.max_body_bytes,
                position=lambda: unit_of_work.current().position,
            )
        except BadRequestError as exc:
            return error_response(str(exc), exc.status)
        except NotFound:
            return self.not_found(request)
        except MethodNotAllowed as exc:
            allowed = ", ".join(exc.valid_methods)
            method = quoted(request.method, 20)
            return error_response(
                f"method {method} is not allowed on {quoted(request.path)}; use {allowed}",
                405,
                {"Allow": allowed},
            )
        except Exception as exc:
            answer = answer_for(exc)
            if answer is None:
                log.exception(
                    "unexpected error serving %s %s", quoted(request.method, 20), quoted(request.path)
                )
                return error_response("internal error; the server log has the details", 500)
            if answer.status >= 500:
                log_refusal(request.method, request.path, answer.status, exc)
                if request.path == "/worker" and self.is_operator(request):
                    return json_response(
                        {"error": answer.message, **failure_report(exc)},
                        answer.status,
                        {"Retry-After": "1"},
                    )
            headers = {"Retry-After": "1"} if answer.retry_after else None
            return error_response(answer.message, answer.status, headers)

    def not_found(self, request: Request) -> Response:
        return error_response(f"no route for {quoted(request.path)}", 404)

    # The operational routes -------------------------------------------------------------------

    def health(self, request: Request) -> Response:
        """Liveness: the process answers. Touches no database."""
        return json_response(health_report(self.is_operator(request)))

    def ready(self, request: Request) -> Response:
        """Readiness: this worker's application is built and its store answers, writes included."""
        self.application(request)
        hosting = registry.slot(self.name).hosting
        return json_response(ready_report(hosting, self.is_operator(request)))

    def worker(self, request: Request) -> Response:
        """Which process answered, and what it built: for operators only (404 to anyone else)."""
        if not self.is_operator(request):
            return self.not_found(request)
        return json_response(worker_report(self.application(request)))

    def metrics(self, request: Request) -> Response:
        """The whole instance's numbers in Prometheus' text format: for operators only (404 to
        anyone else), like ``/worker``. Answers also while the application cannot be built; 503
        when the numbers would be one process's out of several (no uWSGI sharedarea)."""
        if not self.is_operator(request):
            return self.not_found(request)
        settings = self.settings()  # where the numbers are, also before this worker has built
        recorder.configure(settings.metrics_sharedarea, settings.metrics_dir)
        # PEP 3333: true when other processes may serve this application too; unsaid counts as true.
        problem = recorder.problem(multiprocess=bool(request.environ.get("wsgi.multiprocess", True)))
        if problem is not None:
            return error_response(problem, 503)
        gauges = projection_gauges(registry.built(self.name))
        body, content_type = exposition.render(gauges, request.headers.get("Accept") or "")
        return Response(body, 200, content_type=content_type)


@functools.cache
def _defaults() -> Settings:
    """The settings before any build (read from the environment once; the valid ones when some
    value is bad: the build reports that)."""
    return resolve(None)[0]


_request_scoped: dict[type, bool] = {}


def _is_request_scoped(cls: type) -> bool:
    """``isinstance(app, RequestScope)``, decided once per class (a protocol check costs ~10 µs)."""
    known = _request_scoped.get(cls)
    if known is None:
        known = _request_scoped[cls] = issubclass(cls, RequestScope)
    return known
