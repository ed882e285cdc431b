"""ASGI servers (uvicorn ``--workers``, granian ``--interface asgi``, gunicorn ``--worker-class
asgi``): one application per worker process, built in that process's lifespan startup, never in a
parent; requests served by a WSGI application (the example's JSON API, your Flask or Django app)
on a bounded pool of threads. Your module::

    from uwsgi_es.servers.asgi import asgi
    application = asgi(your_wsgi_app, YourApplication)

Why the lifespan: each of these servers runs it in every worker process, after that process was
forked or spawned, and before the worker takes a request; granian's ``on_startup`` hooks and
gunicorn's ``--preload`` run in the parent instead, where nothing may be built (a worker that
finds an application its parent built forgets it, says so, and builds its own: ``registry``). The
build (it connects and pings) runs in a thread, so the event loop is not held; it never fails the
startup: a failed build makes every request answer 503 and is retried with a back-off, as under
uWSGI, unless ``UWSGI_ES_FAIL_FAST`` is on (then the worker refuses to start, naming why).

The commands are synchronous: each request runs on one of ``UWSGI_ES_ASGI_THREADS`` threads
(a2wsgi's pool), so a worker holds at most that many database connections at once (keep
``UWSGI_ES_POOL_SIZE`` + ``UWSGI_ES_MAX_OVERFLOW`` at or above it; the build warns otherwise). The
request body is read by the event loop before a thread is taken, and only when its declared
length is within ``UWSGI_ES_MAX_BODY_BYTES``: a client sending slowly holds a coroutine, never a
thread, and a body too large or without a length is answered (413, 411) from its headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from uwsgi_es.lifecycle import build, registry
from uwsgi_es.runtime import log, process
from uwsgi_es.runtime.log import configure_logging
from uwsgi_es.settings import Settings, resolve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_EMPTY: Message = {"type": "http.request", "body": b"", "more_body": False}


class AsgiHost:
    """The ASGI application: the lifespan builds and closes this process's application, HTTP
    requests go to the WSGI application on the thread pool."""

    def __init__(
        self, wsgi_app: Any, factory: registry.ApplicationFactory | None, threads: int | None
    ) -> None:
        from a2wsgi import WSGIMiddleware  # the ASGI extra; imported where it is used

        self.factory = factory
        self.settings: Settings = resolve(None)[0]
        self.threads = threads or self.settings.asgi_threads
        process.declare_threads(self.threads)
        self.wsgi: Any = WSGIMiddleware(wsgi_app, workers=self.threads)  # typed for its own scopes
        if factory is not None:
            registry.declare(factory)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self.wsgi(scope, await self._buffered(scope, receive), send)
        else:  # a WebSocket: nothing here speaks it
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                configure_logging()
                outcome = await asyncio.to_thread(build.build_in_this_process, self.factory)
                if outcome.error is not None and outcome.settings.fail_fast:
                    error = f"{type(outcome.error).__name__}: {outcome.error}"
                    await send({"type": "lifespan.startup.failed", "message": error})
                    return
                self._check_pool(outcome.settings)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(build.close_in_this_process)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _check_pool(self, settings: Settings) -> None:
        capacity = settings.pool_size + settings.max_overflow
        if settings.database_url.startswith("postgresql") and capacity < self.threads:
            log.emit(
                "pool_smaller_than_threads",
                logging.WARNING,
                pid=os.getpid(),
                threads=self.threads,
                pool=capacity,
                consequence="requests beyond the pool wait for a connection (UWSGI_ES_POOL_TIMEOUT), "
                "then answer 503; raise UWSGI_ES_POOL_SIZE or lower UWSGI_ES_ASGI_THREADS",
            )

    async def _buffered(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` replaying the body read here, when its declared length is within the limit;
        otherwise an empty body (the application answers from the headers: 411, 413)."""
        length = _declared_length(scope)
        limit = self._max_body_bytes()
        if length is None or length > limit:
            return _replay([])
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app sees the body end
                break
            messages.append(message)
            received += len(message.get("body", b""))
            if not message.get("more_body", False) or received > limit:
                break
        return _replay(messages)

    def _max_body_bytes(self) -> int:
        settings = registry.settings_in_use()
        return (settings or self.settings).max_body_bytes


def _declared_length(scope: Scope) -> int | None:
    """The body's declared length: 0 when none is declared and none is sent, None when it cannot
    be known (chunked, or a Content-Length that is not one number)."""
    headers = dict(scope.get("headers", ()))
    if b"transfer-encoding" in headers:
        return None
    text = headers.get(b"content-length", b"0").decode("latin-1").strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def _replay(messages: list[Message]) -> Receive:
    remaining = list(messages)

    async def receive() -> Message:
        if remaining:
            message = remaining.pop(0)
            return {**message, "more_body": bool(remaining) and message.get("more_body", False)}
        return dict(_EMPTY)

    return receive


def lifespan(
    factory: registry.ApplicationFactory | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """For an ASGI framework's own routes (Starlette, FastAPI: ``Starlette(lifespan=lifespan(App))``):
    build ``factory``'s application once in each worker's lifespan startup, in a thread, and close
    it at shutdown; the framework's thread pool for synchronous work (anyio's default limiter,
    which Starlette's ``run_in_threadpool`` and synchronous endpoints use) is set to
    ``UWSGI_ES_ASGI_THREADS``, the bound the pool budget counts on. A failed build fails the
    startup only with ``UWSGI_ES_FAIL_FAST``; otherwise ``get_application()`` raises a 503-mapped
    error (``uwsgi_es.web.status``) until a retry succeeds."""
    if factory is not None:
        registry.declare(factory)

    @contextlib.asynccontextmanager
    async def run(_: Any) -> AsyncIterator[None]:
        import anyio.to_thread  # the frameworks' own dependency; imported where it is used

        configure_logging()
        settings = resolve(None)[0]
        process.declare_threads(settings.asgi_threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.asgi_threads
        outcome = await asyncio.to_thread(build.build_in_this_process, factory)
        if outcome.error is not None and outcome.settings.fail_fast:
            raise outcome.error
        try:
            yield
        finally:
            await asyncio.to_thread(build.close_in_this_process)

    return run


def asgi(
    wsgi_app: Any, factory: registry.ApplicationFactory | None = None, *, threads: int | None = None
) -> AsgiHost:
    """An ASGI application serving ``wsgi_app``, building ``factory``'s application (default: the
    one ``UWSGI_ES_APPLICATION`` names) once in each worker's lifespan. Importing the module that
    calls this connects to nothing."""
    return AsgiHost(wsgi_app, factory, threads)
