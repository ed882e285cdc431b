"""Aggregates trigger, apply and replay events; topics name importable classes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from uwsgi_es.application import Application, PubSub
from uwsgi_es.domain import Aggregate, EventSequenceError, register_topic, replay, resolve_topic, topic_of
from uwsgi_es.errors import TopicError, TranscodingError
from uwsgi_es.example.domain import BankAccount, InsufficientFundsError
from uwsgi_es.settings import Settings
from uwsgi_es.stores import RecordStore, create_record_store


def test_new_aggregate_has_its_creation_event_pending() -> None:
    """Creating an aggregate triggers version 1, applied and pending."""
    account = BankAccount.open("ann")
    assert (account.owner, account.balance, account.version) == ("ann", 0, 1)
    events = account.collect_events()
    assert [type(e) for e in events] == [BankAccount.Opened]
    assert events[0].originator_id == account.id
    assert account.collect_events() == []


def test_replay_rebuilds_the_same_state() -> None:
    """Replaying the events of an aggregate gives back its state and version."""
    account = BankAccount.open("ann")
    account.deposit(100)
    account.withdraw(30)
    rebuilt = replay(account.collect_events())
    assert isinstance(rebuilt, BankAccount)
    assert (rebuilt.id, rebuilt.owner, rebuilt.balance, rebuilt.version) == (account.id, "ann", 70, 3)


def test_rule_violation_triggers_nothing() -> None:
    """A refused command leaves state, version and pending events unchanged."""
    account = BankAccount.open("ann")
    with pytest.raises(InsufficientFundsError, match="insufficient funds"):
        account.withdraw(1)
    assert (account.balance, account.version, len(account.collect_events())) == (0, 1, 1)


def test_replay_refuses_a_gap_in_versions() -> None:
    """A missing version is corruption, not something to skip over."""
    account = BankAccount.open("ann")
    account.deposit(1)
    account.deposit(2)
    opened, _, second = account.collect_events()
    with pytest.raises(EventSequenceError, match="does not follow"):
        replay([opened, second])


def test_replay_refuses_events_before_creation() -> None:
    account = BankAccount.open("ann")
    account.deposit(1)
    with pytest.raises(EventSequenceError, match="before the aggregate's creation"):
        replay(account.collect_events()[1:])


def test_topics_round_trip_and_bad_topics_say_why() -> None:
    """A topic is module:QualName and resolves back to the class; a wrong one names itself."""
    assert topic_of(BankAccount.Deposited) == "uwsgi_es.example.domain:BankAccount.Deposited"
    assert resolve_topic("uwsgi_es.example.domain:BankAccount.Deposited") is BankAccount.Deposited
    # events stored before the example moved out of uwsgi_es.bank still read (registered aliases)
    assert resolve_topic("uwsgi_es.bank:BankAccount.Deposited") is BankAccount.Deposited
    assert resolve_topic("uwsgi_es.bank:BankAccount") is BankAccount
    with pytest.raises(TopicError, match=r"nowhere\.module:Gone"):
        resolve_topic("nowhere.module:Gone")
    with pytest.raises(TopicError, match="Missing"):
        resolve_topic("uwsgi_es.bank:BankAccount.Missing")


def test_stored_topics_never_import_a_module(capsys: pytest.CaptureFixture[str]) -> None:
    """A topic is data: one naming an importable module that is not among the application's classes
    (``this:s`` prints the Zen of Python when imported) is refused without importing it."""
    import sys

    sys.modules.pop("this", None)
    with pytest.raises(TopicError, match="names no event or aggregate class of this application"):
        resolve_topic("this:s")
    assert "this" not in sys.modules
    assert "Beautiful is better" not in capsys.readouterr().out
    with pytest.raises(TopicError):
        resolve_topic("os:system")


def test_a_renamed_class_reads_its_old_topic_once_registered() -> None:
    with pytest.raises(TopicError):
        resolve_topic("old.module:Account.Deposited")
    register_topic("old.module:Account.Deposited", BankAccount.Deposited)
    assert resolve_topic("old.module:Account.Deposited") is BankAccount.Deposited


def test_empty_stream_replays_to_nothing() -> None:
    """No events means no aggregate, not an empty one."""
    assert replay([]) is None


def test_a_class_version_without_its_upcast_steps_fails_where_it_is_defined() -> None:
    """class_version 3 needs upcast_v1_v2 and upcast_v2_v3; a missing one is an import-time error
    naming the method, not a surprise at the first read of an old event."""
    with pytest.raises(TranscodingError, match=r"class_version 3 but has no upcast_v2_v3\(state\)"):

        @dataclass(frozen=True)
        class Renamed(Aggregate.Event):
            class_version = 3
            name: str

            @staticmethod
            def upcast_v1_v2(state: dict[str, Any]) -> None:
                state["name"] = ""


def test_typed_fields_survive_a_save_and_a_load_through_the_application() -> None:
    """An aggregate whose events carry a Decimal and a UUID: saved and loaded by an application,
    the state holds those types again (orjson could not store the first, returned str for the
    second)."""

    class Ledger(Aggregate):
        @dataclass(frozen=True)
        class Opened(Aggregate.Created):
            owner: UUID

            def apply(self, ledger: Any) -> None:
                ledger.owner, ledger.total = self.owner, Decimal("0")

        @dataclass(frozen=True)
        class Credited(Aggregate.Event):
            amount: Decimal

            def apply(self, ledger: Any) -> None:
                ledger.total += self.amount

    owner = uuid4()
    with Application(_memory_store(), bus=PubSub()) as app:
        ledger = Ledger.create_from(Ledger.Opened, owner=owner)
        ledger.trigger_event(Ledger.Credited, amount=Decimal("0.10"))
        ledger.trigger_event(Ledger.Credited, amount=Decimal("0.20"))
        app.save(ledger)
        loaded = app.get(ledger.id, Ledger)
    assert loaded.owner == owner
    assert type(loaded.owner) is UUID
    assert repr(loaded.total) == "Decimal('0.30')"


def _memory_store() -> RecordStore:
    store = create_record_store(Settings(database_url="sqlite://"))
    store.create_schema()
    return store
