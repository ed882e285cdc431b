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

With ``UWSGI_ES_FAIL_FAST=true`` the instance stops instead. The settings are validated when
``install()`` runs (in the master under prefork: parsing only, no connection), so a bad value
stops uWSGI at start with a message naming the variable. A worker that cannot build exits with
uWSGI's "failed app" code 22: with ``lazy-apps`` and ``need-app`` uWSGI then stops with that
code. In prefork mode uWSGI only respawns such a worker, so the worker raises a flag in memory it
shares with the master and asks the master to stop; the master's exit hook
(``hook-as-user-atexit = rpc:uwsgi_es_exit_code``, in uwsgi.ini) sees the flag and exits with 22 too.
Workers still building when the master stops them exit at once.

A worker closes its application when it stops through ``uwsgi.atexit``, which uWSGI calls in every
loop engine (Python's own ``atexit`` handlers are skipped in async mode, e.g. under gevent).
Outside uWSGI (plain pytest, gunicorn) ``install()`` does nothing and ``import uwsgi_es`` works.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from uwsgi_es import registry
from uwsgi_es.errors import UwsgiUnavailableError
from uwsgi_es.registry import ApplicationFactory
from uwsgi_es.settings import Settings, boolean_setting

uwsgi: ModuleType | None
try:
    import uwsgi  # type: ignore[no-redef]  # exists only inside a uWSGI process
except ImportError:
    uwsgi = None

log = logging.getLogger("uwsgi_es")
FAILED_APP_EXIT_CODE = 22  # uWSGI's UWSGI_FAILED_APP_CODE: with lazy-apps + need-app, the instance stops
EXIT_CODE_RPC = "uwsgi_es_exit_code"  # called by the master's exit hook (see the module docstring)

_installed_in_pid: int | None = None
# One byte shared by the master and every worker it forks: 1 once a worker failed with fail-fast on.
_fail_flag: mmap.mmap | None = None


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
    if boolean_setting(settings, "fail_fast") and settings is None:
        Settings.from_environ()  # parsing only, nothing connects: a bad value stops uWSGI at start
    _preload(settings)
    already_forked = worker_id() > 0 or int(getattr(uwsgi, "mule_id", lambda: 0)()) > 0
    if already_forked:
        build_in_this_process(factory, settings)
        return
    _share_the_fail_flag()
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
    registry.freeze_inherited_objects(settings)
    pid, wid = os.getpid(), worker_id()
    started = time.perf_counter()
    try:
        app = registry.init_application(factory, settings=settings)
    except KeyboardInterrupt:
        # The master is stopping the instance (SIGINT) while this worker builds: stop now, instead
        # of serving on until the master's patience runs out.
        sys.stderr.flush()
        os._exit(0)
    except Exception as exc:
        fail_fast = boolean_setting(settings, "fail_fast")
        consequence = (
            "UWSGI_ES_FAIL_FAST is on: stopping uWSGI"
            if fail_fast
            else ("It answers 503 and /ready fails until a retry succeeds")
        )
        log.error(
            "worker %d (pid %d) could not build its application: %s: %s. %s.",
            wid,
            pid,
            type(exc).__name__,
            exc,
            consequence,
            exc_info=not isinstance(exc, registry.EXPECTED_FAILURES),
        )
        if fail_fast:
            _stop_instance()
        return
    _on_uwsgi_exit(_close_at_exit)
    took = (time.perf_counter() - started) * 1000
    log.info(
        "worker %d (pid %d) built %s on %s in %.1f ms",
        wid,
        pid,
        type(app).__qualname__,
        app.records.describe(),
        took,
    )


def _preload(settings: Settings | None) -> None:
    """Import, never connect, what each worker's build will need: done once here (in the master
    under prefork) the modules are shared by every worker instead of imported after each fork."""
    try:
        settings = settings or Settings.from_environ()
        if settings.store == "cassandra":
            import cassandra.cluster  # creates no Cluster: no threads, no sockets
            import cassandra.io.libevreactor  # noqa: F401
        else:
            from sqlalchemy.engine import make_url

            make_url(settings.database_url).get_dialect().import_dbapi()
    except Exception:  # a bad setting or a missing driver is reported by the build, with its cause
        return


def _stop_instance() -> None:
    """Exit with uWSGI's failed-app code; in prefork mode also make the master stop with it."""
    if uwsgi is not None and not (_option("lazy-apps") or _option("lazy")):
        if _fail_flag is not None:
            _fail_flag[0] = 1
        # The master answers with SIGINT to every worker, this one too: it must not interrupt
        # the exit below (a KeyboardInterrupt there would leave this worker serving).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT})
        os.kill(int(uwsgi.masterpid()), signal.SIGINT)
    sys.stderr.flush()
    os._exit(FAILED_APP_EXIT_CODE)


def _share_the_fail_flag() -> None:
    """In the master, before the fork: the flag a failing worker raises, and the function the
    master's exit hook calls to read it (uWSGI exits 0 after SIGINT otherwise)."""
    global _fail_flag
    if uwsgi is None or _fail_flag is not None:
        return
    _fail_flag = mmap.mmap(-1, 1)  # anonymous and shared: the workers write, the master reads
    flag = _fail_flag

    def exit_code(*_: Any) -> bytes:
        if flag[0]:
            sys.stderr.write("uwsgi_es: a worker failed with UWSGI_ES_FAIL_FAST on: exit code 22\n")
            sys.stderr.flush()
            os._exit(FAILED_APP_EXIT_CODE)
        return b""

    uwsgi.register_rpc(EXIT_CODE_RPC, exit_code)


def _on_uwsgi_exit(function: Callable[[], None]) -> None:
    """Call ``function`` when this uWSGI process stops, after whatever ``uwsgi.atexit`` was before."""
    if uwsgi is None:
        return
    previous = getattr(uwsgi, "atexit", None)

    def both() -> None:
        if previous is not None:
            previous()
        function()

    setattr(uwsgi, "atexit", both)  # noqa: B010 (the uwsgi module is untyped)


def _close_at_exit() -> None:
    # Best effort: uWSGI skips atexit after SIGKILL or harakiri, and nothing may depend on it.
    if registry.initialisation_failure() is not None:
        return
    try:
        released = registry.get_application().records.describe()
    except Exception:
        return  # nothing of this process's own to close
    registry.close_application()
    log.info(
        "worker %d (pid %d) closed its application and released the %s", worker_id(), os.getpid(), released
    )


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
