"""uWSGI: ``install()`` arranges for the application to be built exactly once in every worker, after
the fork. The only module (with ``runtime.process``) that imports ``uwsgi`` or ``uwsgidecorators``.

- prefork (the default): the WSGI module is imported in the master, so ``install()`` registers a
  ``@postfork`` function; uWSGI runs it in each worker, and again in every respawned one.
- lazy-apps (and mules): the module is imported after the fork, when uWSGI has already run its
  post-fork hooks, so a ``@postfork`` registered then would never run. ``install()`` sees it is
  already in a forked process and builds at once.

The build itself is ``lifecycle.build.build_in_this_process``: it never raises into uWSGI (which
would print and swallow the exception, leaving a worker serving without an application).

``UWSGI_ES_HTTP`` (the address uwsgi.ini binds) is checked there too, whatever the fail-fast
setting: uWSGI takes a value without a port for a unix socket path and a port past 65535 modulo
65536, so a typo would serve nobody, silently. A bad one stops the instance with one line.

With ``UWSGI_ES_FAIL_FAST=true`` the instance stops instead. The settings are validated when
``install()`` runs (in the master under prefork: parsing only, no connection), so a bad value
stops uWSGI at start with a message naming the variable. A worker that cannot build exits with
uWSGI's "failed app" code 22: with ``lazy-apps`` and ``need-app`` uWSGI then stops with that
code. In prefork mode uWSGI only respawns such a worker, so the worker raises a flag in memory it
shares with the master and asks the master to stop (SIGINT); the master's exit hook
(``hook-as-user-atexit = rpc:uwsgi_es_exit_code``, in uwsgi.ini) sees the flag and exits with 22 too.
uWSGI installs the master's own signal handlers only as its master loop starts, after forking
the workers: a SIGINT from a worker that fails before then reaches Python's handler, which would
keep it as a KeyboardInterrupt for the next Python code the master runs, the exit hook. The master
therefore answers such an early SIGINT with a handler that does nothing (the next failing worker,
or its respawn, asks again), and each worker puts Python's own back after the fork. Workers still
building when the master stops them exit at once.

A worker closes its applications when it stops through ``uwsgi.atexit``, which uWSGI calls in every
loop engine (Python's own ``atexit`` handlers are skipped in async mode, e.g. under gevent).
Outside uWSGI (plain pytest, gunicorn) ``install()`` does nothing and ``import uwsgi_es`` works.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import mmap
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from uwsgi_es.errors import ConfigurationError, UwsgiEsError, UwsgiUnavailableError
from uwsgi_es.lifecycle import build, kinds, registry
from uwsgi_es.runtime import log, process
from uwsgi_es.runtime.log import configure_logging
from uwsgi_es.settings import Settings, resolve

FAILED_APP_EXIT_CODE = 22  # uWSGI's UWSGI_FAILED_APP_CODE: with lazy-apps + need-app, the instance stops
EXIT_CODE_RPC = "uwsgi_es_exit_code"  # called by the master's exit hook (see the module docstring)

_installed: set[tuple[int, str]] = set()  # (pid, name): one hook per application and process
_installs: dict[str, registry.ApplicationFactory] = {}  # module that called install() -> its factory
_closing_registered_in: int | None = None
# One byte shared by the master and every worker it forks: 1 once a worker failed with fail-fast on.
_fail_flag: mmap.mmap | None = None
_early_sigint_in: int | None = None  # the pid of the process that last got SIGINT in _early_sigint
HTTP_VARIABLE = "UWSGI_ES_HTTP"
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def install(
    factory: registry.ApplicationFactory | None = None,
    *,
    settings: Settings | None = None,
    name: str = registry.DEFAULT,
) -> None:
    """Build this process's application once in every uWSGI worker, after the fork.

    Call it at import time of your WSGI module. ``factory``, ``settings`` and ``name`` go to the
    registry's ``init_application`` (defaults: ``UWSGI_ES_APPLICATION``, the ``UWSGI_ES_*``
    environment, ``"default"``).
    """
    uwsgi = process.uwsgi
    if uwsgi is not None:
        _check_the_listen_address()
    resolved, problem = resolve(settings)  # parsing only, nothing connects
    caller = str(sys._getframe(1).f_globals.get("__name__", "?"))
    if problem is None:
        where = f"the module {caller}"
        try:
            factory = kinds.agreeing(factory, resolved.application, where)
        except UwsgiEsError as exc:
            if uwsgi is None:
                raise
            _refuse_to_start(exc)
    if factory is not None:
        registry.declare(factory, name)  # for builds given no factory (mules, retries)
        _installs[caller] = factory  # for uwsgi-es migrate --ini, which imports the ini's module
    if uwsgi is None:
        return  # not under uWSGI: the web layer builds lazily on first use
    if (os.getpid(), name) in _installed:
        return  # imported twice in one process (e.g. by another name): keep one hook
    _installed.add((os.getpid(), name))
    configure_logging(resolved.log_format)
    if problem is not None and resolved.fail_fast:
        raise problem  # a bad value stops uWSGI at start, naming the variable
    if resolved.fail_fast and (factory is not None or resolved.application):
        # So does a configuration the application's kind can tell is wrong without connecting
        # (e.g. an eventsourcing application's PERSISTENCE_MODULE and its settings).
        kind = kinds.kind_of(factory or kinds.load_factory(resolved.application))
        if kind.check is not None:
            kind.check()
    _preload(resolved)
    if process.is_forked():
        _build_here(factory, settings, name)
        return
    _share_the_fail_flag()
    try:
        import uwsgidecorators
    except Exception as exc:  # it raises a bare Exception without --master
        raise UwsgiUnavailableError(
            f"uwsgi_es needs uWSGI's master process to build the application after each fork ({exc}). "
            "Add 'master = true' to your ini file (or --master), or use lazy-apps."
        ) from exc
    uwsgidecorators.postfork(lambda: _build_here(factory, settings, name))


def _check_the_listen_address() -> None:
    raw = os.environ.get(HTTP_VARIABLE)
    try:
        check_http_address(raw)
    except ConfigurationError as exc:
        if raw is not None and raw in process.options("http"):
            # uWSGI bound it before loading the application: a unix socket file, if it has no port.
            # Remove it, as `vacuum` would on a clean stop: a refused start leaves nothing behind.
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(raw).st_mode):
                    os.unlink(raw)
        _refuse_to_start(exc)


def check_http_address(raw: str | None) -> None:
    """Refuse an ``UWSGI_ES_HTTP`` that is not ``host:port`` (unset or blank: the ini's default)."""
    if raw is None or not raw.strip():
        return
    host, colon, port = raw.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            known = isinstance(ipaddress.ip_address(host[1:-1]), ipaddress.IPv6Address)
        except ValueError:
            known = False
    else:
        known = host == "" or (_HOST_NAME.fullmatch(host) is not None and len(host) <= 253)
    valid_port = port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535
    if colon and known and valid_port:
        return
    raise ConfigurationError(
        f"{HTTP_VARIABLE}={raw!r} is not an address to listen on: use host:port with a port from 1 "
        "to 65535, e.g. 127.0.0.1:8080, :8080 (every interface) or [::1]:8080. (uWSGI would take "
        "it for a unix socket path, or a port modulo 65536, and serve nobody.)"
    )


def installed_by(module: str) -> registry.ApplicationFactory | None:
    """The factory ``module`` passed to ``install()`` when it was imported (None if it did not)."""
    return _installs.get(module)


def _refuse_to_start(error: UwsgiEsError) -> NoReturn:
    """Stop this uWSGI instance at start with one line, no traceback, uWSGI's "failed app" code. At
    once: in the master (prefork) nothing was forked yet (the HTTP router starts after the apps
    load), and a SystemExit there would hang in uWSGI's exit hooks; in a worker importing under
    lazy-apps, that code makes the master stop the instance instead of respawning the worker."""
    sys.stderr.write(f"uwsgi_es: cannot start: {error}\n")
    sys.stderr.flush()
    os._exit(FAILED_APP_EXIT_CODE)


def _build_here(factory: registry.ApplicationFactory | None, settings: Settings | None, name: str) -> None:
    global _closing_registered_in
    try:
        _take_back_sigint()
        _report_inherited_threads()
        if process.is_projection_mule():
            # It builds when it has a projection to run (uwsgi_es.readside.mule); until its main
            # starts, a stop (SIGINT: a mule spawned as a fail-fast stop began) ends it quietly
            # instead of as a KeyboardInterrupt in the middle of importing the runner.
            process.stop_at_once_while_importing()
            return
        outcome = build.build_in_this_process(
            factory, settings=settings, name=name, stop_instance=_stop_instance
        )
    except KeyboardInterrupt:
        # The master is stopping the instance (SIGINT) while this worker starts: stop now, instead
        # of serving on until the master's patience runs out.
        sys.stderr.flush()
        os._exit(0)
    if outcome.app is not None and _closing_registered_in != os.getpid():
        _closing_registered_in = os.getpid()
        _on_uwsgi_exit(build.close_in_this_process)


def _report_inherited_threads() -> None:
    """After the fork, without fork hooks (the inis' choice): say which threads the master ran when
    it forked this process. None of them exists here, yet a lock one held at that moment (the GIL,
    the logging lock, a pool's) stays held here for good: this process may hang. uwsgi_es never
    starts a thread in the master; this names whoever did, and the fix. (With the fork hooks,
    Python's own after-fork handler has forgotten them already, and there is nothing to say.)"""
    current = threading.current_thread()
    inherited = sorted(t.name for t in threading.enumerate() if t.ident != current.ident)
    if inherited:
        log.emit(
            "threads_inherited",
            logging.WARNING,
            role=process.role(),
            pid=os.getpid(),
            threads=", ".join(inherited),
            fix="start threads after the fork (a library that builds at import: build it in the "
            "post-fork hook, install(...)), or set py-call-uwsgi-fork-hooks = true and run no "
            "Python mule; `uwsgi-es doctor INI` names the code that started them",
        )


def _take_back_sigint() -> None:
    """After the fork: Python's SIGINT handler again instead of the master's early one, and the
    KeyboardInterrupt of a SIGINT this process got in between (the master stopping already)."""
    if signal.getsignal(signal.SIGINT) is process.exit_now:  # a lazy worker's import is over
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGINT) is _early_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if _early_sigint_in == os.getpid():
            raise KeyboardInterrupt


def _preload(settings: Settings) -> None:
    """Import, never connect, what each worker's build will need: done once here (in the master
    under prefork) the modules are shared by every worker instead of imported after each fork."""
    try:
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
    if process.in_uwsgi() and not process.is_lazy():
        # The master answers with SIGINT to every worker, this one too: it must not interrupt
        # the exit below (a KeyboardInterrupt there would leave this worker serving).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT})
        if _fail_flag is not None:
            _fail_flag[0] = 1
        os.kill(process.master_pid(), signal.SIGINT)
    sys.stderr.flush()
    os._exit(FAILED_APP_EXIT_CODE)


def instance_failed() -> bool:
    """Whether a worker failed with UWSGI_ES_FAIL_FAST and asked the master to stop (prefork). A
    mule forked after the master began stopping is never told to stop: it asks this instead."""
    return _fail_flag is not None and bool(_fail_flag[0])


def _share_the_fail_flag() -> None:
    """In the master, before the fork: the flag a failing worker raises, and the function the
    master's exit hook calls to read it (uWSGI exits 0 after SIGINT otherwise)."""
    global _fail_flag
    uwsgi = process.uwsgi
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
    # Until uWSGI's master loop installs its own handler (see the module docstring).
    signal.signal(signal.SIGINT, _early_sigint)


def _early_sigint(signum: int, frame: object) -> None:
    """The master's SIGINT handler until uWSGI's replaces it: an early stop request is dropped
    rather than kept as a KeyboardInterrupt that would break the exit hook. A worker, which
    inherits it until ``_take_back_sigint``, notes that it got one."""
    global _early_sigint_in
    _early_sigint_in = os.getpid()


def _on_uwsgi_exit(function: Callable[[], None]) -> None:
    """Call ``function`` when this uWSGI process stops, after whatever ``uwsgi.atexit`` was before."""
    uwsgi = process.uwsgi
    if uwsgi is None:
        return
    previous = getattr(uwsgi, "atexit", None)

    def both() -> None:
        if previous is not None:
            previous()
        function()

    setattr(uwsgi, "atexit", both)  # noqa: B010 (the uwsgi module is untyped)
