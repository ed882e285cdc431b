"""The eventsourcing library's projections as UWSGI_ES_PROJECTIONS declares them: the forms the
setting takes, and the errors that name what to write instead (no server needed: SQLite files)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.integrations.eventsourcing.projections import build, declared, named
from uwsgi_es.settings import Settings, resolve

from ..support.library import recorded, running

EXAMPLE = "examples.eventsourcing_bank"
BALANCES = f"{EXAMPLE}.projections:Balances"
SQLITE_VIEW = f"{EXAMPLE}.projections:SqliteBalancesView"


@pytest.fixture
def sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.sqlite")
    monkeypatch.setenv("SQLITE_DBNAME", str(tmp_path / "bank.db"))
    return tmp_path


def test_the_setting_lists_the_projections_in_mule_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UWSGI_ES_PROJECTIONS", f" {BALANCES}={SQLITE_VIEW} , {EXAMPLE}.audit:Audit ")
    settings, problem = resolve()
    assert problem is None
    assert [(d.projection, d.view) for d in declared(settings.projections)] == [
        (BALANCES, SQLITE_VIEW),
        (f"{EXAMPLE}.audit:Audit", None),
    ]
    assert [d.name for d in declared(settings.projections)] == ["balances", "audit"]


@pytest.mark.parametrize("raw", ["Balances", f"{BALANCES}=", f"{BALANCES}=a:B=c:D", "=a:B"])
def test_a_setting_of_another_form_is_refused_naming_both_forms(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("UWSGI_ES_PROJECTIONS", raw)
    _, problem = resolve()
    assert isinstance(problem, ConfigurationError)
    assert "UWSGI_ES_PROJECTIONS" in str(problem)
    assert "module:Name=module:View" in str(problem)


def test_a_projection_without_its_view_is_refused_with_the_form_to_write(sqlite: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"needs its view's class: write .*Balances=module:View"):
        build(declared(BALANCES)[0])


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (f"{EXAMPLE}.domain:BankAccount", "is not a projection of the eventsourcing library"),
        (f"{BALANCES}={EXAMPLE}.domain:BankAccount", "is not a TrackingRecorder class"),
        (f"{EXAMPLE}.nowhere:Balances", "cannot import examples.eventsourcing_bank.nowhere:Balances"),
        (
            f"{BALANCES}={EXAMPLE}.postgres_views:PostgresBalancesView",
            "is not a SQLiteTrackingRecorder, the tracking recorder of eventsourcing.sqlite",
        ),
    ],
)
def test_classes_that_cannot_serve_are_refused_naming_them(sqlite: Path, raw: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        build(declared(raw)[0])


def test_a_name_not_declared_is_answered_with_those_that_are() -> None:
    settings = Settings(projections=f"{BALANCES}={SQLITE_VIEW}")
    with pytest.raises(ConfigurationError, match=r"No projection named 'ledger'.*declared: balances"):
        named(settings, "ledger")
    with pytest.raises(ConfigurationError, match="none \\(UWSGI_ES_PROJECTIONS is empty\\)"):
        named(Settings(), "ledger")


def tables_in(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}


def test_tables_are_made_only_when_asked(sqlite: Path) -> None:
    """Built as a mule builds it, the view creates no table (migrate does); asked, it does."""
    build(declared(f"{BALANCES}={SQLITE_VIEW}")[0]).close()
    assert "account_balances" not in tables_in(sqlite / "bank.db")
    build(declared(f"{BALANCES}={SQLITE_VIEW}")[0], create_tables=True).close()
    assert {"account_balances", "tracking"} <= tables_in(sqlite / "bank.db")


def test_a_process_application_follows_the_hosted_application_exactly_once(
    sqlite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``ProcessApplication`` (a follower of the library's systems) named in the setting follows
    the hosted bank as its runner mule would: one notice per withdrawal, recorded with its tracking
    record; a runner built again (a respawned mule) resumes after it and records nothing twice."""
    from examples.eventsourcing_bank.application import BankAccounts
    from uwsgi_es.integrations.eventsourcing import construct, migrate

    monkeypatch.setenv("NOTICES_SQLITE_DBNAME", str(sqlite / "notices.db"))
    settings = Settings(projections="tests.apps.es_followers:Notices")
    migrate(BankAccounts, settings)
    bank = construct(BankAccounts)
    try:
        account = bank.open_account("followed")
        bank.deposit(account.id, 10)
        bank.withdraw(account.id, 4)
        for expected in (3, 0):  # the second runner: a respawned mule, resuming after the first
            with running(bank, "notices", settings) as runner:
                assert runner.catch_up() == expected
                assert runner.view.max_tracking_id("BankAccounts") == 3
                assert [notice.amount for notice in recorded(runner)] == [4]
    finally:
        bank.close()


def test_a_system_runs_each_follower_after_its_leaders(sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``System`` named in the setting stands for its followers in order (bank -> notices ->
    emails): notices follows the hosted bank, emails follows notices, whose application its runner
    builds to read its log; migrate makes every follower's tables."""
    from examples.eventsourcing_bank.application import BankAccounts
    from uwsgi_es.integrations.eventsourcing import construct, migrate, projection_names

    monkeypatch.setenv("NOTICES_SQLITE_DBNAME", str(sqlite / "notices.db"))
    monkeypatch.setenv("EMAILS_SQLITE_DBNAME", str(sqlite / "emails.db"))
    settings = Settings(projections="tests.apps.es_followers:system")
    assert projection_names(settings) == ["notices", "emails"]
    migrate(BankAccounts, settings)
    bank = construct(BankAccounts)
    try:
        account = bank.open_account("system")
        bank.deposit(account.id, 10)
        bank.withdraw(account.id, 4)
        bank.withdraw(account.id, 5)
        with running(bank, "notices", settings) as notices, running(bank, "emails", settings) as emails:
            assert [leader.name for leader in emails.leaders] == ["notices"]
            assert emails.catch_up() == 0  # notices has sent nothing yet
            assert notices.catch_up() == 4
            assert emails.catch_up() == 2
            assert [email.amount for email in recorded(emails)] == [4, 5]
            assert emails.view.max_tracking_id("notices") == 2
    finally:
        bank.close()
