"""THE build of a process's application, and its close: every server calls these right after its
fork (uWSGI workers and mules, gunicorn's ``post_fork``, Celery's ``worker_process_init``, the
Django helper through ``uwsgi_es.install``), so the fork rules, the failure handling and the log
event live in one place.

``build_in_this_process`` never raises into the server (uWSGI would print and swallow it, gunicorn
and Celery would kill the process): it freezes the objects inherited from the master, resolves the
settings once, builds and pings, records a failure for the registry (every request then answers
503 and retries after a back-off), and logs one structured event, ``build`` or ``build_failed``.
With ``UWSGI_ES_FAIL_FAST`` on, a failure calls the server's ``stop_instance`` instead.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uwsgi_es.errors import ApplicationAlreadyInitialisedError, ConfigurationError, StoreUnavailableError
from uwsgi_es.lifecycle import registry
from uwsgi_es.runtime import log, process
from uwsgi_es.settings import Settings, resolve

# Failures whose message says it all: logged without a traceback.
EXPECTED_FAILURES = (ConfigurationError, StoreUnavailableError)


@dataclass(frozen=True)
class Outcome:
    """What a build gave: the application, or why there is none."""

    app: Any | None
    error: BaseException | None
    settings: Settings


def build_in_this_process(
    factory: registry.ApplicationFactory | None = None,
    *,
    settings: Settings | None = None,
    name: str = registry.DEFAULT,
    stop_instance: Callable[[], None] | None = None,
) -> Outcome:
    """Build this process's application after the fork, log the outcome; never raise."""
    settings, problem = resolve(settings)
    if settings.gc_freeze:
        freeze_inherited_objects()
    started = time.perf_counter()
    try:
        if problem is not None:
            registry.record_failure(name, problem, settings)
            raise problem
        app = registry.init_application(factory, settings=settings, name=name)
    except ApplicationAlreadyInitialisedError:  # built already (e.g. lazily, by a first request)
        return Outcome(registry.get_application(name), None, settings)
    except Exception as exc:
        fail_fast = settings.fail_fast and stop_instance is not None
        log.emit(
            "build_failed",
            logging.ERROR,
            exc_info=not isinstance(exc, EXPECTED_FAILURES),
            **process.where(),
            name=name,
            error=f"{type(exc).__name__}: {exc}",
            consequence=_consequence(fail_fast),
        )
        if fail_fast and stop_instance is not None:
            stop_instance()
        return Outcome(None, exc, settings)
    slot = next(h for h in registry.slots() if h.name == name)
    log.emit(
        "build",
        **process.where(),
        name=name,
        application=type(app).__qualname__,
        store=slot.hosting.describe(),
        ms=(time.perf_counter() - started) * 1000,
    )
    return Outcome(app, None, settings)


def _consequence(fail_fast: bool) -> str:
    """What the failed build means, for the one who reads the log line."""
    if fail_fast:
        return "UWSGI_ES_FAIL_FAST is on: stopping uWSGI"
    if process.mule_id():
        return "this mule's projection runner builds again until it can"
    return "it answers 503 and /ready fails until a retry succeeds"


def close_in_this_process() -> None:
    """Close every application this process built, logging each (best effort: servers skip it
    after SIGKILL or harakiri, and nothing may depend on it)."""
    for slot in registry.slots():
        released = slot.hosting.describe()
        try:
            registry.close_application(slot.name)
        except Exception as exc:  # closing is best effort: say so, and go on with the others
            log.emit("close_failed", logging.WARNING, **process.where(), name=slot.name, error=repr(exc))
            continue
        log.emit("close", **process.where(), name=slot.name, released=released)


def freeze_inherited_objects() -> None:
    """Keep the memory a worker shares with its master shared: call first thing after the fork.

    CPython's cyclic garbage collector writes to the header of every object it examines, so its
    first full collection in a worker copies every page of objects inherited from the master
    (about 8 MB per worker for the example API). ``gc.freeze()`` moves the inherited objects out of
    the collector's sight (it only relinks list heads, touching no object); objects made from here
    on are collected as usual. Turned off by ``UWSGI_ES_GC_FREEZE=false``.
    """
    gc.freeze()
