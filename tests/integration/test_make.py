"""The README's two commands on a fresh machine, as far as a test can take them: `make run`
installs uwsgi_es and its own dependencies only (not the test tools, Django, Celery...), saying
first that uWSGI compiles for about a minute."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..support.paths import PROJECT

pytestmark = pytest.mark.integration

# What serving the example needs (pyproject's dependencies) and what they pull in.
SERVING = {"uwsgi", "gevent", "greenlet", "sqlalchemy", "prometheus-client", "msgspec", "typing-extensions"}
TEST_TOOLS = {"pytest", "django", "celery", "flask", "gunicorn", "mypy", "ruff", "eventsourcing", "rq"}


def test_make_run_installs_uwsgi_es_alone(tmp_path: Path) -> None:
    """The stamp `make run` depends on, made in a copy of this checkout's committed files (git
    archive: `make` there knows nothing of this checkout's .venv)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=PROJECT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive.stdout, check=True)
    made = subprocess.run(
        ["make", ".venv/.installed"], cwd=checkout, capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    assert "uWSGI compiles from source the first time: about a minute" in made.stdout
    listed = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {line.split("==")[0].lower().replace("_", "-").replace(".", "-") for line in listed.split()}
    assert not installed & TEST_TOOLS, f"make run installed test tools: {installed & TEST_TOOLS}"
    extra = installed - SERVING - {"uwsgi-es", "pip", "setuptools", "zope-event", "zope-interface"}
    assert not extra, f"make run installed more than uwsgi_es needs: {sorted(extra)}"
