"""UWSGI_ES_DATABASE_URL as uwsgi_es reads it: ``postgresql://`` means psycopg 3 (the driver our
extra installs) for every consumer, an explicit driver is respected, and a malformed URL is refused
with a ConfigurationError that teaches the right form, never with SQLAlchemy's traceback, and
never quoting a password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uwsgi_es.doctor.budget import pool_of
from uwsgi_es.doctor.findings import Observed
from uwsgi_es.errors import ConfigurationError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import create_engine_from_settings

VARIABLE = "UWSGI_ES_DATABASE_URL"


def read(url: str) -> Settings:
    return Settings.from_environ({VARIABLE: url})


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_url_without_a_driver_means_psycopg_3(scheme: str) -> None:
    """postgresql:// and postgres:// are read as postgresql+psycopg://, the rest kept as written."""
    settings = read(f"{scheme}://app:s3cret@db.example:5433/bank?sslmode=require")
    assert settings.database_url == "postgresql+psycopg://app:s3cret@db.example:5433/bank?sslmode=require"
    assert "s3cret" not in settings.describe_store()


def test_every_consumer_gets_the_psycopg_url() -> None:
    """The workers' and migrate's engine, and the doctor's connection budget, all use psycopg 3."""
    engine = create_engine_from_settings(read("postgresql://app:s3cret@db.example/bank"))
    try:
        assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    finally:
        engine.dispose()
    seen = Observed({}, {VARIABLE: "postgres://app:s3cret@db.example/bank"}, [], [])
    pool = pool_of(seen)
    assert pool is not None
    assert pool.url.drivername == "postgresql+psycopg"


def test_settings_made_in_code_are_read_the_same_way_by_the_engine() -> None:
    """A Settings built in Python (not from the environment) gets the same reading of its URL."""
    engine = create_engine_from_settings(Settings(database_url="postgresql://app@db.example/bank"))
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()
    with pytest.raises(ConfigurationError, match="three slashes"):
        create_engine_from_settings(Settings(database_url="sqlite://relative/path"))


def test_an_explicit_driver_is_respected_and_its_absence_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    """postgresql+psycopg2:// stays psycopg2; without that module the error names it and the form
    the uwsgi_es[postgres] extra installs, and shows no password."""
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # an import of it fails, installed or not
    with pytest.raises(ConfigurationError) as caught:
        read("postgresql+psycopg2://app:s3cret@db.example/bank")
    message = str(caught.value)
    assert VARIABLE in message
    assert "'psycopg2'" in message
    assert "postgresql+psycopg://" in message
    assert "uwsgi_es[postgres]" in message
    assert "s3cret" not in message


def test_a_missing_psycopg_3_says_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError) as caught:
        read("postgresql://app:s3cret@db.example/bank")
    message = str(caught.value)
    assert "'psycopg'" in message
    assert "pip install 'uwsgi_es[postgres]'" in message
    assert "s3cret" not in message


def test_sqlite_with_two_slashes_is_refused_with_the_forms_that_work() -> None:
    """sqlite://relative/path would make 'relative' a host: refused, naming the variable, the value,
    and the three- and four-slash forms."""
    with pytest.raises(ConfigurationError) as caught:
        read("sqlite://relative/path")
    message = str(caught.value)
    assert VARIABLE in message
    assert "'sqlite://relative/path'" in message
    assert "sqlite:///relative/path.sqlite3" in message
    assert "sqlite:////absolute/path.sqlite3" in message
    assert "sqlite:///relative/path" in message  # the user's own URL, corrected


def test_sqlite_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        read("sqlite://user:s3cret@/var/x.sqlite3")
    assert "s3cret" not in str(caught.value)
    assert "sqlite:////absolute/path.sqlite3" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sqlite:/x", "sqlite:///relative/path.sqlite3"),
        ("sqlite:", "sqlite:///relative/path.sqlite3"),
        ("sqlite://:memory:", "sqlite:///relative/path.sqlite3"),
        ("postgres//host", "postgresql+psycopg://user:password@host:5432/dbname"),
        ("postgres+psycopg2://u@h/db", "postgresql+psycopg2"),
        ("", "postgresql+psycopg://user:password@host:5432/dbname"),
        ("   ", "postgresql+psycopg://user:password@host:5432/dbname"),
    ],
)
def test_malformed_urls_are_configuration_errors(raw: str, expected: str) -> None:
    """Each malformed shape is a ConfigurationError naming the variable and a form that works."""
    with pytest.raises(ConfigurationError) as caught:
        create_engine_from_settings(Settings(database_url=raw))
    assert VARIABLE in str(caught.value)
    assert expected in str(caught.value)
    if raw.strip():  # from the environment, blank means the default: only the others are refused
        with pytest.raises(ConfigurationError, match=VARIABLE):
            read(raw)


def test_the_cli_check_reads_postgresql_urls_as_psycopg(tmp_path: Path) -> None:
    """`uwsgi-es check` on postgresql://: the error is about the server (nothing listens), not a
    missing psycopg2."""
    cli = Path(sys.executable).parent / "uwsgi-es"
    result = subprocess.run(
        [str(cli), "check"],
        check=False,
        env={VARIABLE: "postgresql://app:s3cret@127.0.0.1:9/bank", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "psycopg2" not in output
    assert "postgresql+psycopg://app:***@127.0.0.1:9/bank" in output, output
    assert "s3cret" not in output
