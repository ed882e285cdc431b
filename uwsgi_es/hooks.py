"""The uWSGI integration, and the only module that imports ``uwsgi`` or ``uwsgidecorators``.

``install()`` arranges for the application to be built exactly once in every worker, after the fork:

- prefork (the default): the WSGI module is imported in the master, so ``install()`` registers a
  ``@postfork`` function; uWSGI runs it in each worker, and again in every respawned one.
- lazy-apps: the module is imported in each worker after the fork, when uWSGI has already run its
  post-fork hooks, so a ``@postfork`` registered then would never run. ``install()`` sees it is
  already in a worker and builds at once.

A failed build never leaves a half-built worker serving 200s: uWSGI would print and swallow an
exception from a post-fork hook, so it is caught here, logged with its cause, and recorded by the
registry; every request then answers 503 naming it, and the build is retried with back-off.
Outside uWSGI (plain pytest, gunicorn) ``install()`` does nothing and ``import uwsgi_es`` works.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from types import ModuleType

from uwsgi_es import registry
from uwsgi_es.errors import UwsgiUnavailableError
from uwsgi_es.registry import ApplicationFactory
from uwsgi_es.settings import Settings

uwsgi: ModuleType | None
try:
    import uwsgi  # type: ignore[no-redef]  # exists only inside a uWSGI process
except ImportError:
    uwsgi = None

log = logging.getLogger("uwsgi_es")

_installed_in_pid: int | None = None


def in_uwsgi() -> bool:
    return uwsgi is not None


def worker_id() -> int:
    """The uWSGI worker id (1..N), 0 in the master, a mule, or outside uWSGI."""
    return int(uwsgi.worker_id()) if uwsgi is not None else 0


def process_count() -> int:
    return int(uwsgi.numproc) if uwsgi is not None else 1


def thread_count() -> int:
    return int(_option("threads") or 1)


def install(factory: ApplicationFactory | None = None, *, settings: Settings | None = None) -> None:
    """Build this process's application once in every uWSGI worker, after the fork.

    Call it at import time of your WSGI module. ``factory`` and ``settings`` are passed to
    ``init_application`` (default: ``UWSGI_ES_APPLICATION`` and the ``UWSGI_ES_*`` environment).
    """
    global _installed_in_pid
    if uwsgi is None:
        return  # not under uWSGI: the web layer builds lazily on first use
    if _installed_in_pid == os.getpid():
        return  # imported twice in one process (e.g. by another name): keep one hook
    _installed_in_pid = os.getpid()
    configure_logging()
    already_forked = worker_id() > 0 or int(getattr(uwsgi, "mule_id", lambda: 0)()) > 0
    if already_forked:
        build_in_this_process(factory, settings)
        return
    try:
        import uwsgidecorators
    except Exception as exc:  # it raises a bare Exception without --master
        raise UwsgiUnavailableError(
            f"uwsgi_es needs uWSGI's master process to build the application after each fork ({exc}). "
            "Add 'master = true' to your ini file (or --master), or use lazy-apps."
        ) from exc
    uwsgidecorators.postfork(lambda: build_in_this_process(factory, settings))


def build_in_this_process(
    factory: ApplicationFactory | None = None, settings: Settings | None = None
) -> None:
    """Build the application here, logging the outcome; never raise into uWSGI."""
    pid, wid = os.getpid(), worker_id()
    try:
        app = registry.init_application(factory, settings=settings)
    except Exception as exc:
        log.error(
            "worker %d (pid %d) could not build its application: %s: %s. It answers 503 and "
            "/ready fails until a retry succeeds.",
            wid,
            pid,
            type(exc).__name__,
            exc,
            exc_info=not isinstance(exc, registry.EXPECTED_FAILURES),
        )
        return
    atexit.register(_close_at_exit)
    log.info("worker %d (pid %d) built %s on %s", wid, pid, type(app).__qualname__, app.records.describe())


def _close_at_exit() -> None:
    # Best effort: uWSGI skips atexit after SIGKILL or harakiri, and nothing may depend on it.
    if registry.initialisation_failure() is None:
        registry.close_application()
        log.info("worker %d (pid %d) closed its application", worker_id(), os.getpid())


def configure_logging() -> None:
    """Send uwsgi_es's INFO logs to stderr (uWSGI's log) unless logging is already configured."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("uwsgi_es [pid %(process)d] %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _option(name: str) -> str | None:
    if uwsgi is None:
        return None
    value = uwsgi.opt.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[-1]
    return value.decode() if isinstance(value, bytes) else str(value)
