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

The commands are synchronous: each request runs on one of ``UWSGI_ES_ASGI_THREADS`` threads, so
a worker holds at most that many database connections at once (keep ``UWSGI_ES_POOL_SIZE`` +
``UWSGI_ES_MAX_OVERFLOW`` at or above it; the build warns otherwise). The request body is read by
the event loop before a thread is taken, and only when its declared length is within
``UWSGI_ES_MAX_BODY_BYTES``: a client sending slowly holds a coroutine, never a thread, and a body
too large or without a length is answered (413, 411) from its headers. The WSGI call and its whole
response happen in one trip to the thread (the environ is a2wsgi's ``build_environ``): a2wsgi's
own middleware crosses between the loop and the thread for the start and for every chunk, which
cost 2.4 times the time of a ``/health`` under granian (4,101 against 9,671 requests/s, measured
side by side). The price: a response is sent whole, never streamed (the JSON APIs here answer a
few hundred bytes); an application that streams belongs on granian's WSGI interface or uWSGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import io
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from uwsgi_es.lifecycle import build, registry
from uwsgi_es.runtime import log, process
from uwsgi_es.runtime.log import configure_logging
from uwsgi_es.settings import Settings, resolve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiHost:
    """The ASGI application: the lifespan builds and closes this process's application, HTTP
    requests go to the WSGI application on the thread pool."""

    def __init__(
        self, wsgi_app: Any, factory: registry.ApplicationFactory | None, threads: int | None
    ) -> None:
        from a2wsgi.wsgi import build_environ  # the ASGI extra; imported where it is used

        self.wsgi_app = wsgi_app
        self.build_environ: Any = build_environ
        self.factory = factory
        self.settings: Settings = resolve(None)[0]
        self.threads = threads or self.settings.asgi_threads
        process.declare_threads(self.threads)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="uwsgi_es-request")
        if factory is not None:
            registry.declare(factory)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:  # a WebSocket: nothing here speaks it
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request: the body read here, the WSGI call and its whole response on a pool thread
        (one hop there and back), the response sent from here."""
        body = await self._body(scope, receive)
        environ = self.build_environ(scope, io.BytesIO(body))
        call = functools.partial(contextvars.copy_context().run, self._call, environ)
        status, headers, content = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The WSGI application's whole answer (PEP 3333: ``write`` and the iterable, in order)."""
        chunks: list[bytes] = []
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info is not None and started:  # too late to change the status: as PEP 3333 says
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return chunks.append

        result = self.wsgi_app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return int(status.split(" ", 1)[0]), encoded, b"".join(chunks)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                outcome = await _build_here(self.factory)
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

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The body, read here when its declared length is within the limit; otherwise none (the
        application answers from the headers: 411, 413)."""
        length = _declared_length(scope)
        limit = self._max_body_bytes()
        if length is None or length > limit:
            return b""
        parts: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app sees the body end
                break
            parts.append(message.get("body", b""))
            received += len(parts[-1])
            if not message.get("more_body", False) or received > limit:
                break
        return b"".join(parts)

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


async def _build_here(factory: registry.ApplicationFactory | None) -> build.Outcome:
    """This worker's build, in a thread (it connects and pings), with its log set up first."""
    configure_logging()
    return await asyncio.to_thread(build.build_in_this_process, factory)


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

        settings = resolve(None)[0]
        process.declare_threads(settings.asgi_threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.asgi_threads
        outcome = await _build_here(factory)
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
