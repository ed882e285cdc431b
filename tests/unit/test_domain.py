"""Aggregates trigger, apply and replay events; topics name importable classes."""

from __future__ import annotations

import pytest

from uwsgi_es.domain import EventSequenceError, register_topic, replay, resolve_topic, topic_of
from uwsgi_es.errors import TopicError
from uwsgi_es.example.domain import BankAccount, InsufficientFundsError


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
