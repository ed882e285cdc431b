"""``Aggregate.create_from``: the public way to make a new aggregate, usable from a subclass's own
``create`` classmethod (the name is left free for it), with ``_create`` kept as an alias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from uwsgi_es.application import Application, PubSub
from uwsgi_es.domain import Aggregate
from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store


class Account(Aggregate):
    owner: str
    balance: int

    @dataclass(frozen=True)
    class Opened(Aggregate.Created):
        owner: str

        def apply(self, account: Any) -> None:
            account.owner, account.balance = self.owner, 0

    @dataclass(frozen=True)
    class Deposited(Aggregate.Event):
        amount: int

        def apply(self, account: Any) -> None:
            account.balance += self.amount

    @classmethod
    def create(cls, owner: str) -> Account:  # the users' common pattern: no override, no type: ignore
        return cls.create_from(cls.Opened, owner=owner)


class Note(Aggregate):
    kind: str

    @dataclass(frozen=True)
    class Written(Aggregate.Created):
        event_class: str  # a field named like create_from's first parameter

        def apply(self, note: Any) -> None:
            note.kind = self.event_class


def test_create_from_makes_the_aggregate_with_its_first_event_pending() -> None:
    """``create_from``: version 1, the event applied and pending until saved."""
    note = Note.create_from(Note.Written, event_class="memo")
    assert (type(note), note.kind, note.version) == (Note, "memo", 1)
    [event] = note.collect_events()
    assert type(event) is Note.Written
    assert (event.originator_id, event.originator_version) == (note.id, 1)


def test_a_subclass_s_own_create_classmethod_can_call_the_base_one() -> None:
    """``create(cls, owner)`` calling ``cls.create_from(cls.Opened, owner=owner)`` works, and the
    aggregate it makes is saved and loaded back by an application."""
    account = Account.create("ann")
    assert (type(account), account.owner, account.balance, account.version) == (Account, "ann", 0, 1)
    account.trigger_event(Account.Deposited, amount=5)
    store = create_record_store(Settings(database_url="sqlite://"))
    store.create_schema()
    with Application(store, bus=PubSub()) as app:
        app.save(account)
        loaded = app.get(account.id, Account)
    assert (loaded.owner, loaded.balance, loaded.version) == ("ann", 5, 2)


def test_the_old_private_name_still_works() -> None:
    """``_create`` is the same method, also on a class whose own ``create`` takes other arguments."""
    account = Account._create(Account.Opened, owner="bob")
    assert (type(account), account.owner, account.version) == (Account, "bob", 1)
    assert Aggregate._create == Aggregate.create_from


@pytest.mark.parametrize("event_class", [Account.Deposited, dict, "Opened"])
def test_create_from_refuses_anything_but_a_creation_event_class(event_class: Any) -> None:
    """Only a subclass of Aggregate.Created can start an aggregate: the error says so and names it."""
    with pytest.raises(UwsgiEsError, match=r"Aggregate\.Created") as caught:
        Note.create_from(event_class)
    assert isinstance(caught.value, TypeError)
    assert "Note.create_from" in str(caught.value)
