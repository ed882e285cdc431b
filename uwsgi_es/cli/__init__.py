"""The ``uwsgi-es`` command: deployment steps that must not run inside workers.

- ``uwsgi-es migrate`` creates the tables once per deployment (idempotent). Workers never do:
  creating schema in every worker races and slows boot. For an eventsourcing library application
  (``UWSGI_ES_APPLICATION`` names it) it creates the library's tables, in its persistence module.
  The read models of the application's projections are created too (``Application.projections``).
- ``uwsgi-es project NAME`` runs the projection NAME of the application until SIGTERM/SIGINT:
  the runner a uWSGI mule runs, for deployments that run the read side under systemd or in a
  container of its own.
- ``uwsgi-es check`` validates the ``UWSGI_ES_*`` settings and pings the store, so a deployment
  script can stop before uWSGI starts with a bad configuration.
- ``uwsgi-es doctor INI`` boots the ini under uWSGI as production would, with a probe, and
  reports connections, threads and applications made before the fork, risky options, and the
  pools against PostgreSQL's ``max_connections``, each with its fix (``uwsgi_es.doctor``).
- ``uwsgi-es settings --markdown | --ini`` prints the settings table of the README, or the
  declarations a ``strict = true`` ini includes (``deploy/uwsgi-es-settings.ini``).

They read the same configuration the workers read, and exit 1 with one clear line on error (2 for
an error we did not foresee, still one line, never a traceback). No line ever holds a password.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.lifecycle import kinds, registry
from uwsgi_es.lifecycle.events import configure_logging
from uwsgi_es.readside.projection import Projection
from uwsgi_es.readside.runner import ProjectionRunner
from uwsgi_es.readside.status import projection_classes, projection_named
from uwsgi_es.redaction import scrub, secrets_of
from uwsgi_es.settings import Settings, render_ini, render_markdown
from uwsgi_es.stores import create_record_store
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore


def _library_kind(settings: Settings) -> kinds.Kind | None:
    """The kind of the application UWSGI_ES_APPLICATION names, when its tables are its own (an
    eventsourcing library application); None for uwsgi_es's own store."""
    if not settings.application:
        return None
    kind = kinds.kind_of(kinds.load_factory(settings.application))
    return kind if kind.migrate is not None else None


def migrate(settings: Settings) -> str:
    kind = _library_kind(settings)
    if kind is not None and kind.migrate is not None:
        return kind.migrate(settings)
    # DDL on a large table (CREATE INDEX) may rightly run longer than any request's statement.
    store = create_record_store(dataclasses.replace(settings, statement_timeout=0.0))
    try:
        store.create_schema()
        store.ping()
        done = f"schema ready in {store.describe()}"
        projections = _projections(settings)
        if projections and isinstance(store, SQLAlchemyRecordStore):
            for projection in projections:
                projection.metadata.create_all(store.engine, checkfirst=True)
            done += f"; read models of {', '.join(p.name for p in projections)}"
        return done
    finally:
        store.close()


def _projections(settings: Settings) -> list[type[Projection]]:
    """The projections of the application UWSGI_ES_APPLICATION names (none when it names none)."""
    if not settings.application:
        return []
    return projection_classes(kinds.load_factory(settings.application))


def project(settings: Settings, name: str) -> str:
    """Run the projection ``name`` here until SIGTERM or SIGINT (what a runner mule does)."""
    configure_logging()
    app = registry.init_application(settings=settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runner = ProjectionRunner(app, projection_named(app, name)())
        runner.run(stop)
    finally:
        registry.close_application()
    return f"{name} stopped"


def check(settings: Settings) -> str:
    kind = _library_kind(settings)
    if kind is not None:
        if kind.check is not None:
            kind.check()
        _, hosting = kind.construct(settings)
        try:
            hosting.ping()
            return f"settings valid; {hosting.describe()} answers and has its tables"
        finally:
            hosting.close()
    store = create_record_store(settings)
    try:
        store.ping()
        return f"settings valid; {store.describe()} answers and has its tables"
    finally:
        store.close()


STORE_COMMANDS = {"migrate": migrate, "check": check}


def _one_line(error: BaseException, secrets: tuple[str, ...]) -> str:
    return " ".join(scrub(str(error), secrets).split())


def doctor(ini: str, timeout: float) -> int:
    """0: clean; 1: problems found; 2: the instance did not boot (or the doctor could not run)."""
    from uwsgi_es.doctor.examination import examine  # the doctor's modules only when asked for

    raw_url = os.environ.get("UWSGI_ES_DATABASE_URL")
    try:
        examination = examine(ini, timeout=timeout)
    except UwsgiEsError as exc:
        print(
            f"uwsgi-es doctor: error: {_one_line(exc, secrets_of(raw_url) if raw_url else ())}",
            file=sys.stderr,
        )
        return 2
    print(scrub(examination.report(), secrets_of(raw_url) if raw_url else ()))
    return examination.status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="uwsgi-es",
        description="Deployment steps for uwsgi_es, configured by UWSGI_ES_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands.add_parser("migrate", help="create the tables (idempotent; once per deployment)")
    commands.add_parser("check", help="validate the settings and ping the store")
    project_command = commands.add_parser("project", help="run one projection until SIGTERM/SIGINT")
    project_command.add_argument("name", help="the projection's name (its tracking record's key)")
    settings_command = commands.add_parser("settings", help="print every setting, as a table or ini")
    form = settings_command.add_mutually_exclusive_group(required=True)
    form.add_argument("--markdown", action="store_true", help="the README's table")
    form.add_argument("--ini", action="store_true", help="deploy/uwsgi-es-settings.ini")
    doctor_command = commands.add_parser(
        "doctor", help="boot an ini under uWSGI and report what breaks under forking, with fixes"
    )
    doctor_command.add_argument("ini", help="the uWSGI ini production runs")
    doctor_command.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the workers")
    arguments = parser.parse_args(argv)
    if arguments.command == "settings":
        sys.stdout.write(render_markdown() if arguments.markdown else render_ini())
        return 0
    if arguments.command == "doctor":
        return doctor(arguments.ini, arguments.timeout)
    raw_url = os.environ.get("UWSGI_ES_DATABASE_URL")
    secrets = secrets_of(raw_url) if raw_url else ()
    try:
        settings = Settings.from_environ()
        if arguments.command == "project":
            done = project(settings, arguments.name)
        else:
            done = STORE_COMMANDS[arguments.command](settings)
        print(f"uwsgi-es {arguments.command}: {done}")
    except UwsgiEsError as exc:
        print(f"uwsgi-es {arguments.command}: error: {_one_line(exc, secrets)}", file=sys.stderr)
        return 1
    except Exception as exc:  # not foreseen: still one line, still no secret
        print(
            f"uwsgi-es {arguments.command}: unexpected error: {type(exc).__name__}: "
            f"{_one_line(exc, secrets)}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
