"""Projection runners in uWSGI mules, one ``mule = ...`` line per projection in the ini:

    mule = %b-es-mule.py

``%b`` is uWSGI's name for the path of its own binary (``/srv/app/.venv/bin/uwsgi``), and
``uwsgi-es-mule.py`` is a script pip installs beside it with uwsgi_es (``main`` below), so the
line works from any directory, for an installed package as for a checkout. uWSGI runs a ``.py``
mule as a script in both modes; ``mule = uwsgi_es.readside.mule:run`` works too, but in prefork
mode only (under lazy-apps uWSGI 2.0 segfaults a module:function mule at every respawn,
unbit/uwsgi#1746). The older ``.../uwsgi_es/readside/mule_script.py`` path still works.

A mule is a process the uWSGI master forks and respawns (a killed mule is back in about a second)
and that serves no HTTP. The N-th mule that runs this function runs the N-th of the application's
``projections``, resuming from its tracking record. It builds its own application after its fork,
like a worker (the post-fork hook leaves runner mules alone), but only once it knows it has a
projection to run: a mule with none (more mules than projections, a store without a global feed,
an application with none declared) says why once and idles, connecting to nothing.

An application of the eventsourcing library has no ``projections`` of ours: the ini names the
library's projections its mules run (``UWSGI_ES_PROJECTIONS``, run by
``uwsgi_es.integrations.eventsourcing.projections`` through the application's kind).

The same runner runs outside uWSGI with ``uwsgi-es project NAME`` (systemd, a container).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

from uwsgi_es.errors import StoreUnavailableError, UwsgiEsError
from uwsgi_es.lifecycle import build, kinds, registry
from uwsgi_es.readside.runner import ProjectionRunner
from uwsgi_es.readside.status import projection_classes
from uwsgi_es.runtime import log, process
from uwsgi_es.runtime.log import configure_logging
from uwsgi_es.servers import uwsgi as uwsgi_server
from uwsgi_es.settings import Settings, resolve

BUILD_RETRY_SECONDS = 1.0
IDLE_CHECK_SECONDS = 1.0  # how often an idle mule looks whether fail-fast stopped the instance


def main() -> None:
    """The ``uwsgi-es-mule.py`` script: ``run()`` until uWSGI stops the mule. SIGINT (uWSGI's stop)
    ends the process at once wherever it is, as during its imports: a KeyboardInterrupt raised
    inside threading's lock code by a second SIGINT surfaces as a RuntimeError ("release unlocked
    lock") that ``run`` cannot tell from a failure, and printed a traceback at a clean stop."""
    signal.signal(signal.SIGINT, process.exit_now)
    run()


def run() -> None:
    """The mule's life (also the ``module:function`` form's entry): find this mule's projection,
    build, run it until uWSGI stops the mule (SIGINT: the process ends there, at once)."""
    try:
        _live()
    except KeyboardInterrupt:  # uWSGI stops the instance (SIGINT) while this mule starts or runs
        os._exit(0)


def _live() -> None:
    settings, problem = resolve()
    configure_logging(settings.log_format)
    if problem is not None:
        _idle(f"the settings are invalid ({problem}); the workers say so too")
    factory = _factory(settings)
    kind = kinds.kind_of(factory)
    if kind.projections is not None and kind.runner is not None:
        _run_adapted(kind.projections, kind.runner, factory, settings)
    if settings.store != "sqlalchemy":
        _idle(
            f"UWSGI_ES_STORE={settings.store}: projections read the events in one global order, which "
            "only the SQL store keeps (Cassandra keeps no order across aggregates)"
        )
    index = _runner_index()
    if isinstance(factory, type):  # known without building: no connection for a mule with nothing to do
        _check_has_projection(factory, index)
    app = _application()
    _check_has_projection(type(app), index)
    try:
        runner = ProjectionRunner(app, projection_classes(app)[index]())
    except UwsgiEsError as exc:
        _idle(str(exc))
    runner.run(threading.Event())


def _run_adapted(
    projections: Callable[[Settings], list[str]],
    runner_of: Callable[[Any, str, Settings], Any],
    factory: Any,
    settings: Settings,
) -> NoReturn:
    """An application of another library (the eventsourcing library's): run the projection of its
    kind that the settings declare for this mule (``UWSGI_ES_PROJECTIONS``)."""
    index = _runner_index()
    try:
        names = projections(settings)
    except UwsgiEsError as exc:
        _idle(str(exc))
    if index >= len(names):
        _idle(
            f"UWSGI_ES_PROJECTIONS declares {len(names)} projection(s) for "
            f"{getattr(factory, '__qualname__', factory)} and this is runner mule {index + 1}: "
            "nothing to run here"
        )
    app = _application()
    while True:
        try:
            runner = runner_of(app, names[index], settings)
            break
        except StoreUnavailableError as exc:  # the view's database may not be up yet
            log.emit("projection_waiting", logging.WARNING, projection=names[index], error=str(exc))
            _stop_if_the_instance_failed()
            time.sleep(BUILD_RETRY_SECONDS)
        except UwsgiEsError as exc:
            _idle(str(exc))
    runner.run(threading.Event())
    os._exit(0)


def _factory(settings: Settings) -> Any:
    """The application's factory: the one the WSGI module installs (imported here under lazy-apps,
    where the master imports nothing), else the one UWSGI_ES_APPLICATION names."""
    module = process.option("module")
    if process.is_lazy() and module:
        importlib.import_module(module.split(":", 1)[0])
    declared = registry.declared()
    if declared is not None:
        return declared
    try:
        return kinds.load_factory(settings.application)
    except UwsgiEsError as exc:
        _idle(str(exc))


def _check_has_projection(cls: type, index: int) -> None:
    declared = projection_classes(cls) if hasattr(cls, "projections") else []
    if index >= len(declared):
        _idle(
            f"{cls.__qualname__} declares {len(declared)} projection(s) and this is runner mule "
            f"{index + 1}: nothing to run here"
        )


def _runner_index() -> int:
    """Which of the ini's runner mules this is (0 for the first ``mule = ...:run`` line)."""
    mules, mine = process.options("mule"), process.mule_id() - 1
    return sum(1 for mule in mules[:mine] if process.runs_projections(mule))


def _application() -> Any:
    """This process's application, built here as a worker builds it (logged as ``build`` or
    ``build_failed``), again and again until it builds: the database may not be up yet."""
    while True:
        outcome = build.build_in_this_process()
        if outcome.app is not None:
            return outcome.app
        _stop_if_the_instance_failed()
        time.sleep(BUILD_RETRY_SECONDS)


def _idle(reason: str) -> NoReturn:
    """Say why this mule runs nothing, then wait to be stopped (exiting would make uWSGI respawn
    it, again and again)."""
    log.emit("projection_runner_idle", role=process.role(), reason=reason)
    while True:
        _stop_if_the_instance_failed()
        time.sleep(IDLE_CHECK_SECONDS)


def _stop_if_the_instance_failed() -> None:
    """Exit when a worker has stopped the instance (UWSGI_ES_FAIL_FAST): uWSGI spawns its mules
    after it starts handling signals, so a mule forked while the master was already stopping is
    never signalled, and the master would wait for it forever."""
    if uwsgi_server.instance_failed():
        os._exit(0)
