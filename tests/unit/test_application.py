"""The application: save publishes, the policy stores once, conflicts store nothing, close unsubscribes."""

from __future__ import annotations

import os
from uuid import uuid4

import pytest

from uwsgi_es.application import Application, PubSub, constructions_in_this_process
from uwsgi_es.domain import Aggregate
from uwsgi_es.errors import (
    AggregateNotFoundError,
    ApplicationClosedError,
    ConcurrencyError,
    DuplicateSubscriptionError,
    ForkedApplicationError,
)
from uwsgi_es.example.domain import BankAccount, BankAccounts
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store

from ..support.forking import in_child

# Real forks: `make test` runs these on Python 3.12 and 3.13 too.
pytestmark = pytest.mark.interpreters


def test_saved_events_are_stored_once_and_replayed(settings: Settings) -> None:
    """One save stores each event once; a fresh load sees the same state."""
    with BankAccounts.from_settings(settings) as app:
        account = app.open_account("ann")
        app.deposit(account.id, 250)
        app.withdraw(account.id, 50)
        loaded = app.get_account(account.id)
        assert (loaded.balance, loaded.version) == (200, 3)
        assert [r.originator_version for r in app.records.select(account.id)] == [1, 2, 3]


def test_conflicting_batch_stores_nothing(settings: Settings) -> None:
    """Two writers load version 1; the second save conflicts and none of its events are stored."""
    with BankAccounts.from_settings(settings) as app:
        account = app.open_account("ann")
        first, second = app.get_account(account.id), app.get_account(account.id)
        first.deposit(10)
        app.save(first)
        second.deposit(20)
        second.deposit(30)  # a batch of two: versions 2 and 3
        with pytest.raises(ConcurrencyError, match="already stored"):
            app.save(second)
        assert [r.originator_version for r in app.records.select(account.id)] == [1, 2]
        assert app.get_account(account.id).balance == 10


def test_command_retries_on_fresh_state_then_gives_up(settings: Settings) -> None:
    """A conflicting command is re-run after reloading; with retries exhausted it raises."""
    with BankAccounts.from_settings(settings) as app:
        account = app.open_account("ann")
        attempts: list[int] = []

        def racing_deposit() -> BankAccount:
            loaded = app.get_account(account.id)
            attempts.append(loaded.version)
            if len(attempts) == 1:  # someone else writes between our load and our save
                app.deposit(account.id, 5)
            loaded.deposit(100)
            app.save(loaded)
            return loaded

        result = app.command(racing_deposit)
        assert attempts == [1, 2]  # the retry loaded the other writer's version
        assert result.balance == 105
        assert (app.conflicts, app.retries) == (1, 1)

    no_retries = Settings(database_url=settings.database_url, conflict_retries=0)
    with BankAccounts.from_settings(no_retries) as app:

        def always_conflicting() -> None:
            raise ConcurrencyError("simulated")

        with pytest.raises(ConcurrencyError):
            app.command(always_conflicting)
        assert (app.conflicts, app.retries) == (1, 0)


def test_unknown_aggregate_is_not_found(settings: Settings) -> None:
    with (
        BankAccounts.from_settings(settings) as app,
        pytest.raises(AggregateNotFoundError, match="No BankAccount"),
    ):
        app.get_account(uuid4())


def test_second_persistence_subscription_is_refused(settings: Settings) -> None:
    """Two applications in one process would write every event twice: the second is refused."""
    with BankAccounts.from_settings(settings) as first:
        with pytest.raises(DuplicateSubscriptionError, match="written twice"):
            BankAccounts.from_settings(settings)
        assert first.bus.count_persistence_subscriptions() == 1
        account = first.open_account("ann")
        assert len(first.records.select(account.id)) == 1


def test_close_unsubscribes_so_a_new_application_may_subscribe(settings: Settings) -> None:
    app = BankAccounts.from_settings(settings)
    bus = app.bus
    app.close()
    app.close()  # idempotent
    assert bus.count_persistence_subscriptions() == 0
    with pytest.raises(ApplicationClosedError):
        app.open_account("ann")
    with BankAccounts.from_settings(settings) as again:
        assert again.bus.count_persistence_subscriptions() == 1


def test_separate_buses_do_not_conflict(settings: Settings) -> None:
    """The refusal is per pub-sub: an application on its own bus may coexist (e.g. in tests)."""
    with (
        BankAccounts.from_settings(settings) as app,
        BankAccounts(create_record_store(settings), bus=PubSub()) as isolated,
    ):
        account = isolated.open_account("ann")
        assert len(isolated.records.select(account.id)) == 1
        assert (
            app.bus.count_persistence_subscriptions() == isolated.bus.count_persistence_subscriptions() == 1
        )


def test_constructions_are_counted_per_process(settings: Settings) -> None:
    before = constructions_in_this_process()
    with BankAccounts.from_settings(settings):
        assert constructions_in_this_process() == before + 1
    assert in_child(constructions_in_this_process) == ("ok", 0)


def test_application_inherited_across_fork_refuses_to_work(settings: Settings) -> None:
    """A child using its parent's application gets a clear error, not shared sockets."""
    with BankAccounts.from_settings(settings) as app:
        account = app.open_account("ann")
        status, detail = in_child(lambda: app.get_account(account.id))
        assert status == "error"
        assert detail.startswith(ForkedApplicationError.__name__)
        assert f"built in process {os.getpid()}" in detail
        assert app.get_account(account.id).owner == "ann"  # the parent is unharmed


def test_persist_event_type_narrows_what_is_stored(settings: Settings) -> None:
    """Only events of the application's persist_event_type reach the store."""

    class OnlyDeposits(Application):
        persist_event_type = BankAccount.Deposited

    with OnlyDeposits.from_settings(settings) as app:
        account = BankAccount.open("ann")
        account.deposit(7)
        app.save(account)
        assert [r.originator_version for r in app.records.select(account.id)] == [2]
        assert issubclass(BankAccount.Deposited, Aggregate.Event)
