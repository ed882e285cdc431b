"""A PostgreSQL URL that names no driver (postgresql://) works end to end on a real server: read as
psycopg 3 by `uwsgi-es migrate` and `uwsgi-es check`, as by every worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.postgres


def test_migrate_and_check_work_on_a_postgresql_url_naming_no_driver(
    postgres_url: str, tmp_path: Path
) -> None:
    """`uwsgi-es migrate` then `uwsgi-es check` on a real PostgreSQL, given postgresql://."""
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    cli = Path(sys.executable).parent / "uwsgi-es"
    env = {
        "UWSGI_ES_DATABASE_URL": plain,
        "UWSGI_ES_APPLICATION": "uwsgi_es.example.domain:BankAccounts",
        "PATH": "/usr/bin:/bin",
    }
    for command in ("migrate", "check"):
        result = subprocess.run(
            [str(cli), command],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
