"""The ``uwsgi-es`` command: deployment steps that must not run inside workers.

- ``uwsgi-es migrate`` creates the tables once per deployment (idempotent). Workers never do:
  creating schema in every worker races and slows boot.
- ``uwsgi-es check`` validates the ``UWSGI_ES_*`` settings and pings the store, so a deployment
  script can stop before uWSGI starts with a bad configuration.

Both read the same configuration the workers read, and exit 1 with one clear line on error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store


def migrate(settings: Settings) -> str:
    store = create_record_store(settings)
    try:
        store.create_schema()
        store.ping()
        return f"schema ready in {store.describe()}"
    finally:
        store.close()


def check(settings: Settings) -> str:
    store = create_record_store(settings)
    try:
        store.ping()
        return f"settings valid; {store.describe()} answers and has its tables"
    finally:
        store.close()


COMMANDS = {"migrate": migrate, "check": check}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="uwsgi-es",
        description="Deployment steps for uwsgi_es, configured by UWSGI_ES_* environment variables.",
    )
    parser.add_argument(
        "command", choices=sorted(COMMANDS), help="migrate: create tables; check: validate and ping"
    )
    arguments = parser.parse_args(argv)
    try:
        settings = Settings.from_environ()
        print(f"uwsgi-es {arguments.command}: {COMMANDS[arguments.command](settings)}")
    except UwsgiEsError as exc:
        print(f"uwsgi-es {arguments.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
