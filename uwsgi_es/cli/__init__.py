"""The ``uwsgi-es`` command: deployment steps that must not run inside workers.

- ``uwsgi-es migrate --ini uwsgi.ini`` creates every table the application needs, once per
  deployment (idempotent): the event store's and every projection's read model (an eventsourcing
  library application: the library's tables). Workers never do: creating schema in every worker
  races and slows boot. The application is the one the ini's WSGI module installs, found as uWSGI
  finds it (``cli.target``); without ``--ini``, the one ``UWSGI_ES_APPLICATION`` names.
- ``uwsgi-es check [--ini FILE]`` validates the settings and pings the store, so a deployment
  script can stop before uWSGI starts with a bad configuration.
- ``uwsgi-es project NAME [--ini FILE]`` runs the projection NAME until SIGTERM/SIGINT: the runner
  a uWSGI mule runs, for deployments that run the read side under systemd or in a container.
- ``uwsgi-es status [--json]``, ``park NAME``, ``replay NAME POSITION``, ``reset NAME --yes``,
  ``rebuild NAME``: the day-2 operations on projections (``uwsgi_es.readside.operations``,
  ``.rebuild``): what each projection is doing (exit 1 when one is stopped or cannot run), set
  aside the event one is stopped at, apply a parked event after the fix, empty a read model for
  its runner to refill, or fill a new one beside the live one and switch to it (blue-green).
- ``uwsgi-es init MODULE`` writes a commented uwsgi.ini for your WSGI module (``cli.ini``).
- ``uwsgi-es doctor INI`` boots the ini under uWSGI as production would, with a probe, and
  reports connections, threads and applications made before the fork, risky options, and the
  pools against PostgreSQL's ``max_connections``, each with its fix (``uwsgi_es.doctor``).
- ``uwsgi-es settings --markdown | --ini`` prints the settings table of the README, or the
  declarations a ``strict = true`` ini includes (``deploy/uwsgi-es-settings.ini``).

They read the same configuration the workers read, import your code from the current directory
(or the ini's ``chdir``) as uWSGI does, and exit 1 with one clear line on error (2 for an error we
did not foresee, still one line, never a traceback). No line ever holds a password.

The rule: the top floor, it may import anything in the package; nothing imports it (the console
scripts name it), and it never runs inside a worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from uwsgi_es import __version__
from uwsgi_es.cli.ini import init
from uwsgi_es.cli.steps import check, migrate, operations, project
from uwsgi_es.cli.target import Target, locate
from uwsgi_es.errors import ProjectionOperationError, UwsgiEsError
from uwsgi_es.readside import operations as readside_operations
from uwsgi_es.readside.rebuild import rebuild
from uwsgi_es.redaction import scrub, secrets_of
from uwsgi_es.runtime.log import configure_logging
from uwsgi_es.settings import render_ini, render_markdown

__all__ = ["check", "main", "migrate", "project"]

STORE_COMMANDS = {"migrate": migrate, "check": check}
OPERATIONS = ("status", "park", "replay", "reset", "rebuild")
PROGRESS_EVERY = 5.0  # seconds between a rebuild's progress lines


def _one_line(error: BaseException, secrets: tuple[str, ...]) -> str:
    return " ".join(scrub(str(error), secrets).split())


def doctor(ini: str, command: list[str], timeout: float) -> int:
    """0: clean; 1: problems found; 2: the instance did not boot (or the doctor could not run)."""
    from uwsgi_es.doctor.examination import examine, examine_command  # only when asked for

    raw_url = os.environ.get("UWSGI_ES_DATABASE_URL")
    try:
        if ini == "--" or command or (not os.path.isfile(ini) and shutil.which(ini)):  # `-- granian`
            examination = examine_command([part for part in [ini, *command] if part != "--"], timeout=timeout)
        else:
            examination = examine(ini, timeout=timeout)
    except UwsgiEsError as exc:
        print(
            f"uwsgi-es doctor: error: {_one_line(exc, secrets_of(raw_url) if raw_url else ())}",
            file=sys.stderr,
        )
        return 2
    print(scrub(examination.report(), secrets_of(raw_url) if raw_url else ()))
    return examination.status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uwsgi-es",
        description="Deployment steps for uwsgi_es, configured by UWSGI_ES_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"uwsgi-es {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    ini_help = "the ini uWSGI runs: its module names the application (default: UWSGI_ES_APPLICATION)"
    migrate_command = commands.add_parser(
        "migrate", help="create every table the application needs (idempotent; once per deployment)"
    )
    check_command = commands.add_parser("check", help="validate the settings and ping the store")
    project_command = commands.add_parser("project", help="run one projection until SIGTERM/SIGINT")
    project_command.add_argument("name", help="the projection's name (its tracking record's key)")
    status_command = commands.add_parser(
        "status", help="each projection's position, lag and state (exit 1: one is stopped or cannot run)"
    )
    status_command.add_argument("--json", action="store_true", help="as JSON, one object per projection")
    park_command = commands.add_parser(
        "park", help="set aside the event a stopped projection is stopped at; it goes on after it"
    )
    replay_command = commands.add_parser("replay", help="apply a parked event now (after the fix)")
    reset_command = commands.add_parser(
        "reset", help="empty a projection's read model; its runner rebuilds it from the first event"
    )
    for command in (park_command, replay_command, reset_command):
        command.add_argument("name", help="the projection's name")
    replay_command.add_argument("position", type=int, help="the parked event's position (uwsgi-es status)")
    reset_command.add_argument("--yes", action="store_true", help="do it (readers see the model fill up)")
    rebuild_command = commands.add_parser(
        "rebuild",
        help="fill a new read model beside the live one and switch to it when caught up (blue-green)",
    )
    rebuild_command.add_argument("name", help="the projection's name")
    for command in (
        migrate_command,
        check_command,
        project_command,
        status_command,
        park_command,
        replay_command,
        reset_command,
        rebuild_command,
    ):
        command.add_argument("--ini", metavar="FILE", help=ini_help)
    init_command = commands.add_parser("init", help="write a commented uwsgi.ini for your WSGI module")
    init_command.add_argument("module", help="your WSGI callable, e.g. myapp.wsgi:application")
    init_command.add_argument("-o", "--output", default="uwsgi.ini", help="the file to write ('-': stdout)")
    init_command.add_argument("--force", action="store_true", help="replace the file if it exists")
    settings_command = commands.add_parser("settings", help="print every setting, as a table or ini")
    form = settings_command.add_mutually_exclusive_group(required=True)
    form.add_argument("--markdown", action="store_true", help="the README's table")
    form.add_argument("--ini", action="store_true", help="deploy/uwsgi-es-settings.ini")
    doctor_command = commands.add_parser(
        "doctor",
        help="boot an ini under uWSGI (or, after --, another server's command line: granian, gunicorn, "
        "uvicorn) and report what breaks under forking, with fixes",
    )
    doctor_command.add_argument(
        "ini", help="the uWSGI ini production runs, or -- and a server's command line"
    )
    doctor_command.add_argument("server_command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    doctor_command.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the workers")
    return parser


def _operate(arguments: argparse.Namespace, target: Target) -> tuple[str, int]:
    """A day-2 operation on the projections: what it says, and the exit status."""
    if arguments.command == "reset" and not arguments.yes:
        raise ProjectionOperationError(
            f"reset empties the read model of {arguments.name!r} and its runner rebuilds it from the "
            "first event (readers see it fill up meanwhile; the events are untouched). Add --yes."
        )
    app, close = operations(target.settings, target.factory)
    try:
        if arguments.command == "status":
            statuses = readside_operations.status(app)
            code = 0 if all(s.state == "running" for s in statuses) else 1
            if arguments.json:
                return json.dumps([s.as_json() for s in statuses], indent=1), code
            lines = [f"{target.name}, named by {target.named_by}:", *map(_status_line, statuses)]
            return "\n  ".join(lines), code
        if arguments.command == "park":
            parked = readside_operations.park(app, arguments.name)
            return (
                f"{arguments.name}: parked the event at position {parked.position} ({parked.topic}: "
                f"{parked.error.split(':', 1)[0]}); its runner goes on after it within a second. Once "
                f"the code is fixed: uwsgi-es replay {arguments.name} {parked.position}"
            ), 0
        if arguments.command == "replay":
            readside_operations.replay(app, arguments.name, arguments.position)
            return f"{arguments.name}: applied the parked event at position {arguments.position}", 0
        if arguments.command == "rebuild":
            return _rebuild(app, arguments.name), 0
        deleted = readside_operations.reset(app, arguments.name)
        return (
            f"{arguments.name}: {deleted} row(s) of its read model deleted, its position back at 0; "
            "its runner rebuilds it from the first event"
        ), 0
    finally:
        close()


def _rebuild(app: Any, name: str) -> str:
    configure_logging()  # the runner's own lines (a stop, with its traceback for the author)
    last = time.monotonic()

    def progress(applied: int, position: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            line = f"uwsgi-es rebuild: {name}: {applied:,} events applied, at position {position}"
            print(line, file=sys.stderr)

    done = rebuild(app, name, progress)
    return (
        f"{name}: a new read model filled from {done.events:,} events in {done.fill_seconds:.1f} s "
        f"beside the live one, switched in {done.switch_seconds * 1000:.0f} ms (the live runner "
        f"waited that long); {done.rows:,} row(s), at position {done.position}"
    )


def _status_line(status: readside_operations.ProjectionStatus) -> str:
    line = f"{status.name}: {status.state}, position {status.position}, head {status.head}, lag {status.lag}"
    if status.stopped_at is not None:
        line += f"; stopped at {status.stopped_at} ({status.stopped_topic}): {status.error}"
    elif status.error:
        line += f"; cannot run: {status.error}"
    if status.parked:
        line += f"; parked: {', '.join(str(p.position) for p in status.parked)}"
    return line


def _run(arguments: argparse.Namespace) -> tuple[str, int]:
    """Run one step; the line saying what it did, and the exit status."""
    if arguments.command == "init":
        return init(arguments.module, arguments.output, force=arguments.force), 0
    target = locate(arguments.ini)
    if arguments.command in OPERATIONS:
        return _operate(arguments, target)
    if arguments.command == "project":
        return project(target.settings, arguments.name, target.factory), 0
    done = STORE_COMMANDS[arguments.command](target.settings, target.factory)
    if target.factory is None:
        return f"{done} ({target.named_by}: the event store's tables only, no read model)", 0
    return f"{target.name}, named by {target.named_by}: {done}", 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "settings":
        sys.stdout.write(render_markdown() if arguments.markdown else render_ini())
        return 0
    if arguments.command == "doctor":
        return doctor(arguments.ini, arguments.server_command, arguments.timeout)
    raw_url = os.environ.get("UWSGI_ES_DATABASE_URL")
    secrets = secrets_of(raw_url) if raw_url else ()
    try:
        done, status = _run(arguments)
        if arguments.command == "status" and arguments.json:
            print(done)
            return status
        quiet = arguments.command == "init" and arguments.output == "-"  # stdout holds the ini
        print(f"uwsgi-es {arguments.command}: {done}", file=sys.stderr if quiet else sys.stdout)
        return status
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
