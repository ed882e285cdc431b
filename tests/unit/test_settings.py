"""Settings come from UWSGI_ES_* variables, are validated, and errors name the variable."""

from __future__ import annotations

import pytest

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.settings import DEFAULT_DATABASE_URL, Settings, SettingsError, resolve


def test_defaults_suit_the_sqlite_quick_start() -> None:
    settings = Settings.from_environ({})
    assert settings.store == "sqlalchemy"
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.is_sqlite
    assert not settings.is_sqlite_memory


def test_values_are_parsed() -> None:
    settings = Settings.from_environ(
        {
            "UWSGI_ES_DATABASE_URL": "postgresql+psycopg://u:secret@db:5432/app",
            "UWSGI_ES_POOL_SIZE": "7",
            "UWSGI_ES_POOL_PRE_PING": "off",
            "UWSGI_ES_POOL_TIMEOUT": "2.5",
            "UWSGI_ES_CONFLICT_RETRIES": "0",
        }
    )
    assert (settings.pool_size, settings.pool_pre_ping, settings.pool_timeout) == (7, False, 2.5)
    assert settings.conflict_retries == 0
    assert "secret" not in settings.describe_store()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("UWSGI_ES_STORE", "mongodb", "UWSGI_ES_STORE='mongodb' is not a known store"),
        ("UWSGI_ES_DATABASE_URL", "not a url", "UWSGI_ES_DATABASE_URL cannot be read as a database URL"),
        ("UWSGI_ES_DATABASE_URL", "mysql://x/y", "supports sqlite and postgresql"),
        ("UWSGI_ES_DATABASE_URL", "postgresql://u@h:port/db", "its port is not a number"),
        ("UWSGI_ES_DATABASE_URL", "postgresql+nodriver://u@h/db", "names the driver 'postgresql.nodriver'"),
        ("UWSGI_ES_OPERATOR_NETWORKS", "10.0.0.0/33", "UWSGI_ES_OPERATOR_NETWORKS='10.0.0.0/33' is not"),
        ("UWSGI_ES_LOCK_TIMEOUT", "soon", "UWSGI_ES_LOCK_TIMEOUT='soon' is not a number"),
        ("UWSGI_ES_POOL_SIZE", "many", "UWSGI_ES_POOL_SIZE='many' is not a whole number"),
        ("UWSGI_ES_POOL_SIZE", "0", "UWSGI_ES_POOL_SIZE=0 is out of range"),
        ("UWSGI_ES_POOL_PRE_PING", "maybe", "UWSGI_ES_POOL_PRE_PING='maybe' is not a boolean"),
        ("UWSGI_ES_APPLICATION", "no_colon", "package.module:ApplicationClass"),
        ("UWSGI_ES_DATABSE_URL", "sqlite://", "Did you mean UWSGI_ES_DATABASE_URL?"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    """Each error quotes the variable and says what is accepted."""
    with pytest.raises(ConfigurationError, match=expected.replace("?", r"\?").replace("(", r"\(")):
        Settings.from_environ({name: value})


def test_operator_networks_are_parsed() -> None:
    """Loopback by default; a list of networks; 'none' shows process details to nobody."""
    assert [str(n) for n in Settings().operator_networks] == ["127.0.0.0/8", "::1/128"]
    parsed = Settings.from_environ({"UWSGI_ES_OPERATOR_NETWORKS": "10.1.2.0/24, fd00::/8"}).operator_networks
    assert [str(n) for n in parsed] == ["10.1.2.0/24", "fd00::/8"]
    assert Settings.from_environ({"UWSGI_ES_OPERATOR_NETWORKS": "none"}).operator_networks == ()


def test_blank_values_mean_the_default() -> None:
    assert Settings.from_environ({"UWSGI_ES_POOL_SIZE": "  "}).pool_size == Settings().pool_size


def test_retry_ceiling_must_not_be_below_the_first_delay() -> None:
    with pytest.raises(ConfigurationError, match="UWSGI_ES_INIT_RETRY_MAX_SECONDS"):
        Settings.from_environ({"UWSGI_ES_INIT_RETRY_SECONDS": "10", "UWSGI_ES_INIT_RETRY_MAX_SECONDS": "1"})


def test_memory_database_is_recognised() -> None:
    assert Settings(database_url="sqlite:///:memory:").is_sqlite_memory
    assert Settings(database_url="sqlite://").is_sqlite_memory


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, True), ("false", False), ("OFF", False), ("yes", True), ("perhaps", True)],
)
def test_settings_that_parse_survive_one_that_does_not(raw: str | None, expected: bool) -> None:
    """Fail-fast and gc-freeze apply even when another setting is invalid: the one parse that
    fails still yields the valid settings (an unreadable value counts as the default), and the
    error names the variable."""
    environ = {"UWSGI_ES_POOL_SIZE": "lots", "UWSGI_ES_FAIL_FAST": "on"}
    if raw is not None:
        environ["UWSGI_ES_GC_FREEZE"] = raw
    with pytest.raises(SettingsError, match="UWSGI_ES_POOL_SIZE") as caught:
        Settings.from_environ(environ)
    fallback = caught.value.fallback
    assert (fallback.gc_freeze, fallback.fail_fast, fallback.pool_size) == (expected, True, 5)
    if raw == "perhaps":
        assert "and 1 more problem" in str(caught.value)
    settings, problem = resolve(None)
    assert problem is None
    assert settings == Settings()


def test_no_application_is_named_by_default() -> None:
    """A library never falls back to its demo: UWSGI_ES_APPLICATION has no default."""
    assert Settings().application == ""


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("UWSGI_ES_POOL_SIZE", "\u0665"),  # Arabic-Indic five: int() reads it as 5
        ("UWSGI_ES_POOL_SIZE", "\uff15"),  # fullwidth five
        ("UWSGI_ES_POOL_SIZE", "1_0"),
        ("UWSGI_ES_POOL_TIMEOUT", "\u0665.5"),
        ("UWSGI_ES_POOL_TIMEOUT", "1e1"),
        ("UWSGI_ES_POOL_TIMEOUT", "nan"),
        ("UWSGI_ES_CASSANDRA_REPLICATION", "SimpleStrategy:\u0663"),
    ],
)
def test_numbers_are_read_in_ascii_digits_only(variable: str, raw: str) -> None:
    """Every int and float setting (and the replication factor) takes ASCII digits only, and the
    error names the variable and the value."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_environ({variable: raw})
    assert f"{variable}={raw!r}" in str(caught.value)
    assert (
        Settings.from_environ({"UWSGI_ES_POOL_SIZE": "7", "UWSGI_ES_POOL_TIMEOUT": ".5"}).pool_timeout == 0.5
    )


def test_the_listen_url_is_a_postgresql_url_or_nothing() -> None:
    """UWSGI_ES_LISTEN_URL: empty (LISTEN on the database URL, or poll behind a pooler), or a
    PostgreSQL URL (postgresql:// read as psycopg 3, as the database URL is); never shown whole."""
    assert Settings.from_environ({}).listen_url == ""
    parsed = Settings.from_environ({"UWSGI_ES_LISTEN_URL": "postgresql://app:pw@db:5432/app"}).listen_url
    assert parsed == "postgresql+psycopg://app:pw@db:5432/app"
    with pytest.raises(ConfigurationError, match=r"UWSGI_ES_LISTEN_URL=.*is not a PostgreSQL URL") as refused:
        Settings.from_environ({"UWSGI_ES_LISTEN_URL": "sqlite:///var/x.sqlite3"})
    assert "only PostgreSQL's read side listens" in str(refused.value)
    with pytest.raises(ConfigurationError) as unreadable:
        Settings.from_environ({"UWSGI_ES_LISTEN_URL": "postgresql://app:s3cret@db:notaport/app"})
    assert "s3cret" not in str(unreadable.value)
