"""The applications of this process: ``init_application``, ``get_application``, ``close_application``.

The registry hosts any application object that satisfies ``Hosting`` (check it can serve, say what
it is, close): our own ``Application`` does; the kinds in ``lifecycle.kinds`` adapt others. Each
lives in a named slot (``"default"`` unless named), is built once per process, and remembers the
process that built it. Several applications may share a process when their persisted event types
do not overlap (the pub-sub refuses a second persistence subscription for the same events).

After a fork the child sees the parent's slots; they are never used there (``get_application``
raises ``ForkedApplicationError``), and building in the child replaces them without touching the
parent's connections. ``get_application_lazily`` builds on first use behind a double-checked lock,
so concurrent threads of one worker build once. A failed build is remembered with its cause, so
every request can answer 503, and is retried after a growing back-off instead of on every request.

Global state, admitted: the module-level slots below. ``close_application()`` resets them (tests).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from uwsgi_es.errors import (
    ApplicationAlreadyInitialisedError,
    ApplicationNotInitialisedError,
    ConfigurationError,
    InitialisationFailedError,
)
from uwsgi_es.lifecycle import kinds
from uwsgi_es.lifecycle.hosting import Hosting
from uwsgi_es.metrics import recorder
from uwsgi_es.redaction import redact_url
from uwsgi_es.runtime import fork, log, process
from uwsgi_es.settings import Settings

DEFAULT = "default"
# Audit events (PEP 578) `uwsgi-es doctor` listens to: an application built, a factory named.
BUILD_EVENT = "uwsgi_es.build"
DECLARE_EVENT = "uwsgi_es.declare"
ApplicationFactory = type | Callable[[Settings], Any]


@dataclass(frozen=True)
class Slot:
    """One slot: the application users get, how to host it, and where and how it was built."""

    name: str
    app: Any
    hosting: Hosting
    pid: int
    settings: Settings


@dataclass(frozen=True)
class _Failure:
    error: BaseException
    pid: int
    attempts: int
    retry_at: float  # time.monotonic() after which a lazy get tries again
    settings: Settings | None


_lock = threading.RLock()
_slots: dict[str, Slot] = {}
_failures: dict[str, _Failure] = {}
_declared: dict[str, ApplicationFactory] = {}


def declared(name: str = DEFAULT) -> ApplicationFactory | None:
    """The factory a server hook named for slot ``name`` (None when none did)."""
    return _declared.get(name)


def declare(factory: ApplicationFactory, name: str = DEFAULT) -> None:
    """Name the factory of slot ``name`` without building it (a server hook does, in the master):
    a later build given no factory (a retry, a mule's projection runner) builds this one."""
    with _lock:
        _declared[name] = factory
    sys.audit(DECLARE_EVENT, name)  # uwsgi-es doctor listens (PEP 578)


def init_application(
    factory: ApplicationFactory | None = None, *, settings: Settings | None = None, name: str = DEFAULT
) -> Any:
    """Build this process's application (in slot ``name``); raise if it already has one there.

    ``factory``: an ``Application`` subclass, a class a kind adapts (``lifecycle.kinds``), or a
    callable taking ``Settings``; by default the one ``UWSGI_ES_APPLICATION`` names (required then).
    Settings default to the environment's. The application is checked (its store pinged) before it
    is registered, so a build that returns is usable.
    """
    with _lock:
        _forget_inherited()
        existing = _slots.get(name)
        if existing is not None:
            raise ApplicationAlreadyInitialisedError(
                f"This process ({os.getpid()}) already has its application {name!r} "
                f"({type(existing.app).__qualname__}). A second one would store every event twice. "
                "Call get_application() to use it, or close_application() first to replace it."
            )
        return _build(factory, settings, name)


def get_application(name: str | None = None) -> Any:
    """This process's application (the one named, or the only one); raise if there is none or it
    was built in another process."""
    slot = _find(name)
    if slot is not None and slot.pid == os.getpid():
        return slot.app
    _explain_missing(slot, name)


def built(name: str | None = None) -> Any | None:
    """This process's application if it is built here; None otherwise (never builds, never raises)."""
    slot = _find(name)
    return slot.app if slot is not None and slot.pid == os.getpid() else None


def _find(name: str | None) -> Slot | None:
    """The slot ``name``; without a name the default one, or else the only one."""
    if name is not None:
        return _slots.get(name)
    slot = _slots.get(DEFAULT)
    if slot is None and len(_slots) == 1:
        slot = next(iter(_slots.values()))
    return slot


def get_application_lazily(
    factory: ApplicationFactory | None = None, *, settings: Settings | None = None, name: str = DEFAULT
) -> Any:
    """This process's application in slot ``name``, built on first use (thread-safe: once per process).

    An application inherited across fork is replaced by a new one built here. After a failed
    build, raises ``InitialisationFailedError`` until the back-off passes, then tries again. If the
    slot holds an application that is not an instance of ``factory`` (a class), that is refused:
    it would silently be another application than the one asked for.
    """
    slot = _slots.get(name)
    if slot is None or fork.inherited(slot.pid):
        with _lock:
            slot = _slots.get(name)
            if slot is None or fork.inherited(slot.pid):
                _forget_inherited()
                failure = _failures.get(name)
                if failure is not None and time.monotonic() < failure.retry_at:
                    raise _failed(failure)
                started = time.perf_counter()
                app = _build(factory, settings, name)
                _log_lazy_build(_slots[name], started)
                return app
    if isinstance(factory, type) and not isinstance(slot.app, factory):
        raise ConfigurationError(
            f"This process's application {name!r} is a {type(slot.app).__name__}, not the "
            f"{factory.__name__} asked for. Give each application its own name "
            "(init_application(..., name=...)), or ask for the one that was built."
        )
    return slot.app


def _log_lazy_build(slot: Slot, started: float) -> None:
    """Say a build made by a request, as ``lifecycle.build`` says the hooks' (a server without a
    post-fork hook, such as granian's WSGI interface, builds on a worker's first request)."""
    log.configure_logging(slot.settings.log_format)
    log.emit(
        "build",
        **process.where(),
        name=slot.name,
        application=type(slot.app).__qualname__,
        store=slot.hosting.describe(),
        ms=(time.perf_counter() - started) * 1000,
        lazy=True,
    )


def close_application(name: str | None = None) -> None:
    """Close and forget this process's application ``name`` (all of them when None), and any
    recorded failure. Idempotent."""
    with _lock:
        names = list(_slots) if name is None else [name]
        closing = [_slots.pop(n) for n in names if n in _slots]
        for n in list(_failures) if name is None else [name]:
            _failures.pop(n, None)
        if name is None:
            _declared.clear()
    for slot in closing:
        slot.hosting.close()  # in a forked child the store forgets the parent's connections


def slot(name: str | None = None) -> Slot:
    """The slot of this process's application (as ``get_application`` finds it): the application
    and how it is hosted (readiness, description) for the web layer's ``/ready`` and ``/worker``."""
    found = _find(name)
    if found is not None and found.pid == os.getpid():
        return found
    _explain_missing(found, name)


def slots() -> list[Slot]:
    """This process's own slots, in the order they were built."""
    pid = os.getpid()
    return [slot for slot in _slots.values() if slot.pid == pid]


def initialisation_failure(name: str = DEFAULT) -> BaseException | None:
    """Why this process's last build of ``name`` failed, or None when it did not (or was never tried)."""
    failure = _failures.get(name)
    return failure.error if failure is not None and failure.pid == os.getpid() else None


def settings_in_use(name: str = DEFAULT) -> Settings | None:
    """The settings this process's application was built (or last tried to build) with; None when
    no build was tried here."""
    slot = _slots.get(name)
    if slot is not None and slot.pid == os.getpid():
        return slot.settings
    failure = _failures.get(name)
    return failure.settings if failure is not None and failure.pid == os.getpid() else None


def record_failure(name: str, error: BaseException, settings: Settings | None) -> None:
    """Remember a failed build (also one that failed before it reached the registry)."""
    with _lock:
        _failures[name] = _next_failure(name, error, settings)
    recorder.built(ok=False)


def _build(factory: ApplicationFactory | None, settings: Settings | None, name: str) -> Any:
    """Build, check and register; on failure record why and when to try again. Holds the lock."""
    try:
        if settings is None:
            settings = Settings.from_environ()
        recorder.configure(settings.metrics_sharedarea, settings.metrics_dir)
        _check_deployment(settings)
        factory = factory or _declared.get(name)
        kind = kinds.kind_of(factory or kinds.load_factory(settings.application))
        app, hosting = kind.construct(settings)
        try:
            hosting.ping()
        except BaseException:
            hosting.close()
            raise
    except Exception as exc:
        _failures[name] = _next_failure(name, exc, settings or getattr(exc, "fallback", None))
        recorder.built(ok=False)
        raise
    _slots[name] = Slot(name, app, hosting, os.getpid(), settings)
    _failures.pop(name, None)
    recorder.built(ok=True)
    sys.audit(BUILD_EVENT, type(app).__qualname__)  # uwsgi-es doctor listens (PEP 578)
    return app


def _next_failure(name: str, exc: BaseException, settings: Settings | None) -> _Failure:
    previous = _failures.get(name)
    previous = previous if previous is not None and previous.pid == os.getpid() else None
    attempts = 1 if previous is None else previous.attempts + 1
    defaults = settings or Settings()
    delay = min(defaults.init_retry_max_seconds, defaults.init_retry_seconds * 2 ** (attempts - 1))
    return _Failure(exc, os.getpid(), attempts, time.monotonic() + delay, settings)


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
    """Drop the slots (and failures) the parent left before the fork. Holds the lock."""
    pid = os.getpid()
    for name, slot in list(_slots.items()):
        if slot.pid != pid:
            del _slots[name]
            log.emit(
                "forgot_inherited",
                logging.WARNING,
                role=process.role(),
                pid=pid,
                name=name,
                built_in_pid=slot.pid,
                advice="build after the fork to avoid this",
            )
            slot.hosting.close()  # unsubscribes here; the store forgets, never closes, parent sockets
    for name, failure in list(_failures.items()):
        if failure.pid != pid:
            del _failures[name]


def _explain_missing(slot: Slot | None, name: str | None) -> NoReturn:
    pid = os.getpid()
    if slot is not None:
        fork.refuse_if_forked(type(slot.app).__qualname__, slot.pid)
    if name is None and len(_slots) > 1:
        raise ConfigurationError(
            f"Process {pid} hosts several applications ({', '.join(sorted(_slots))}): "
            "name the one you want, get_application(name)."
        )
    failure = _failures.get(name or DEFAULT)
    if failure is not None and failure.pid == pid:
        raise _failed(failure)
    raise ApplicationNotInitialisedError(
        f"Process {pid} has no application{f' named {name!r}' if name else ''} yet. Under uWSGI call "
        "uwsgi_es.install(YourApp) in your WSGI module (it builds after each fork); "
        "elsewhere call init_application() once per process, or use get_application_lazily()."
    )


def _check_deployment(settings: Settings) -> None:
    processes, threads = process.process_count(), process.thread_count()
    if settings.is_sqlite_memory and (processes > 1 or threads > 1):
        raise ConfigurationError(
            f"UWSGI_ES_DATABASE_URL={redact_url(settings.database_url)!r} is an in-memory SQLite "
            f"database, which each of the {processes} processes (and each of {threads} threads) would "
            "see as its own empty database. Use a file, e.g. sqlite:///var/uwsgi_es.sqlite3, or PostgreSQL."
        )
