"""One application per process: ``init_application``, ``get_application``, ``close_application``.

The registry holds at most one application, and knows the process that built it. After a fork the
child sees the parent's entry; it is never used there (``get_application`` raises
``ForkedApplicationError``), and building in the child replaces it without touching the parent's
connections. ``get_application_lazily`` builds on first use behind a double-checked lock, so
concurrent threads of one worker build once. A failed build is remembered with its cause, so every
request can answer 503 naming it, and is retried after a growing back-off instead of on every request.

Global state, admitted: the module-level entry below. ``close_application()`` resets it (tests).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from uwsgi_es.application import Application
from uwsgi_es.errors import (
    ApplicationAlreadyInitialisedError,
    ApplicationNotInitialisedError,
    ConfigurationError,
    ForkedApplicationError,
    InitialisationFailedError,
    StoreUnavailableError,
)
from uwsgi_es.redaction import redact_url
from uwsgi_es.settings import Settings, boolean_setting

log = logging.getLogger(__name__)

# Failures whose message says it all: logged without a traceback.
EXPECTED_FAILURES = (ConfigurationError, StoreUnavailableError)

ApplicationFactory = type[Application] | Callable[[Settings], Application]


def freeze_inherited_objects(settings: Settings | None = None) -> None:
    """Keep the memory a worker shares with its master shared: call first thing after the fork.

    CPython's cyclic garbage collector writes to the header of every object it examines, so its
    first full collection in a worker copies every page of objects inherited from the master
    (about 8 MB per worker for the example API). ``gc.freeze()`` moves the inherited objects out of
    the collector's sight (it only relinks list heads, touching no object); objects made from here
    on are collected as usual. Turned off by ``UWSGI_ES_GC_FREEZE=false``.
    """
    if boolean_setting(settings, "gc_freeze"):
        gc.freeze()


@dataclass(frozen=True)
class _Failure:
    error: BaseException
    pid: int
    attempts: int
    retry_at: float  # time.monotonic() after which a lazy get tries again


_lock = threading.RLock()
_application: Application | None = None
_failure: _Failure | None = None
_settings: Settings | None = None  # of the last build attempt in this process, when they parsed


def init_application(
    factory: ApplicationFactory | None = None, *, settings: Settings | None = None
) -> Application:
    """Build this process's application; raise if it already has one.

    ``factory`` is an ``Application`` subclass or a callable taking ``Settings``; by default the
    class named by ``UWSGI_ES_APPLICATION``. Settings default to ``Settings.from_environ()``.
    The store is pinged before the application is registered, so a build that returns is usable.
    """
    with _lock:
        _forget_inherited()
        if _application is not None:
            raise ApplicationAlreadyInitialisedError(
                f"This process ({os.getpid()}) already has its application "
                f"({type(_application).__qualname__}). A second one would store every event twice. "
                "Call get_application() to use it, or close_application() first to replace it."
            )
        return _build(factory, settings)


def get_application() -> Application:
    """This process's application; raise if there is none or it was built in another process."""
    app = _application
    if app is not None and app.built_in_pid == os.getpid():
        return app
    return _explain_missing(app)


def get_application_lazily(
    factory: ApplicationFactory | None = None, *, settings: Settings | None = None
) -> Application:
    """This process's application, built on first use (thread-safe: built once per process).

    An application inherited across fork is replaced by a new one built here. After a failed
    build, raises ``InitialisationFailedError`` until the back-off passes, then tries again.
    """
    app = _application
    if app is not None and app.built_in_pid == os.getpid():
        return app  # the hot path: no lock once built
    with _lock:
        app = _application
        if app is not None and app.built_in_pid == os.getpid():
            return app
        _forget_inherited()
        failure = _failure
        if failure is not None and time.monotonic() < failure.retry_at:
            raise _failed(failure)
        return _build(factory, settings)


def close_application() -> None:
    """Close and forget this process's application, and any recorded failure. Idempotent."""
    global _application, _failure
    with _lock:
        app, _application, _failure = _application, None, None
    if app is not None:
        app.close()  # in a forked child the store forgets the parent's connections, never closes them


def settings_in_use() -> Settings | None:
    """The settings this process's application was built (or last tried to build) with; None when
    no build was tried here, or its settings did not parse."""
    app = _application
    if app is not None and app.built_in_pid == os.getpid():
        return app.settings
    settings = _settings
    return settings if _failure is not None and _failure.pid == os.getpid() else None


def initialisation_failure() -> BaseException | None:
    """Why this process's last build failed, or None when it did not (or was never tried)."""
    failure = _failure
    return failure.error if failure is not None and failure.pid == os.getpid() else None


def load_factory(import_string: str) -> ApplicationFactory:
    """Import ``package.module:Name`` (the ``UWSGI_ES_APPLICATION`` setting)."""
    module_name, _, attribute = import_string.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"UWSGI_ES_APPLICATION={import_string!r}: cannot import {module_name!r} ({exc})."
        ) from exc
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigurationError(
            f"UWSGI_ES_APPLICATION={import_string!r}: {module_name} has no attribute {attribute!r}."
        )
    if isinstance(factory, type) and not issubclass(factory, Application):
        raise ConfigurationError(
            f"UWSGI_ES_APPLICATION={import_string!r} is a class but not an Application subclass."
        )
    if not callable(factory):
        raise ConfigurationError(f"UWSGI_ES_APPLICATION={import_string!r} is neither a class nor a callable.")
    return factory  # type: ignore[no-any-return]


def _build(factory: ApplicationFactory | None, settings: Settings | None) -> Application:
    """Build, ping and register; on failure record why and when to try again. Holds the lock."""
    global _application, _failure, _settings
    _settings = None
    try:
        settings = settings or Settings.from_environ()
        _settings = settings
        _check_deployment(settings)
        factory = factory or load_factory(settings.application)
        app = _construct(factory, settings)
        try:
            app.records.ping()
        except BaseException:
            app.close()
            raise
    except Exception as exc:
        _failure = _next_failure(exc, settings)
        raise
    _application, _failure = app, None
    return app


def _construct(factory: ApplicationFactory, settings: Settings) -> Application:
    if isinstance(factory, type):
        application_class = cast(type[Application], factory)  # load_factory checked the subclass
        return application_class.from_settings(settings)
    return factory(settings)


def _next_failure(exc: BaseException, settings: Settings | None) -> _Failure:
    previous = _failure if _failure is not None and _failure.pid == os.getpid() else None
    attempts = 1 if previous is None else previous.attempts + 1
    first, ceiling = (
        (1.0, 30.0) if settings is None else (settings.init_retry_seconds, settings.init_retry_max_seconds)
    )
    delay = min(ceiling, first * 2 ** (attempts - 1))
    return _Failure(exc, os.getpid(), attempts, time.monotonic() + delay)


def _failed(failure: _Failure) -> InitialisationFailedError:
    wait = max(0.0, failure.retry_at - time.monotonic())
    error = InitialisationFailedError(
        f"Process {failure.pid} could not build its application "
        f"({type(failure.error).__name__}: {failure.error}); "
        f"attempt {failure.attempts}, next try in {wait:.1f}s."
    )
    error.__cause__ = failure.error
    return error


def _forget_inherited() -> None:
    """Drop an entry (or failure) the parent left before the fork. Holds the lock."""
    global _application, _failure
    pid = os.getpid()
    if _application is not None and _application.built_in_pid != pid:
        inherited, _application = _application, None
        log.warning(
            "process %d inherited an application built in process %d; building its own instead "
            "(build after the fork to avoid this)",
            pid,
            inherited.built_in_pid,
        )
        inherited.close()  # unsubscribes here; the store forgets, never closes, parent sockets
    if _failure is not None and _failure.pid != pid:
        _failure = None


def _explain_missing(app: Application | None) -> Application:
    if app is not None:
        app.check_usable()  # raises ForkedApplicationError naming both processes
        raise ForkedApplicationError("unreachable")  # pragma: no cover
    failure = _failure
    if failure is not None and failure.pid == os.getpid():
        raise _failed(failure)
    raise ApplicationNotInitialisedError(
        f"Process {os.getpid()} has no application yet. Under uWSGI import uwsgi_es.hooks and call "
        "install() in your WSGI module (it builds after each fork); elsewhere call init_application() "
        "once per process, or use get_application_lazily()."
    )


def _check_deployment(settings: Settings) -> None:
    from uwsgi_es import hooks  # hooks imports this module; only hooks talks to uWSGI

    processes, threads = hooks.process_count(), hooks.thread_count()
    if settings.is_sqlite_memory and (processes > 1 or threads > 1):
        raise ConfigurationError(
            f"UWSGI_ES_DATABASE_URL={redact_url(settings.database_url)!r} is an in-memory SQLite "
            f"database, which each of the {processes} processes (and each of {threads} threads) would "
            "see as its own empty database. Use a file, e.g. sqlite:///var/uwsgi_es.sqlite3, or PostgreSQL."
        )
