"""A test-only WSGI module for the read side: the bank example with a second projection, ``Effects``,
which records every event it is given in a table without a unique key (a repeat would show as a
second row), and which fails on the account of an owner named "poison" while ``READSIDE_POISON``
is set (the "bug"; restarting without it is the "fix").

    module = tests.apps.readside_app:application
    mule = uwsgi_es.readside.mule:run   (one per projection: uwsgi.ini has the first)
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, insert

from uwsgi_es.domain import DomainEvent
from uwsgi_es.example.api import api
from uwsgi_es.example.balances import Balances
from uwsgi_es.example.domain import BankAccount, BankAccounts
from uwsgi_es.readside import Projection
from uwsgi_es.servers.uwsgi import install

effects_metadata = MetaData()
effects_table = Table("test_effects", effects_metadata, Column("position", BigInteger(), nullable=False))


class Effects(Projection):
    name: ClassVar[str] = "effects"
    metadata: ClassVar[MetaData] = effects_metadata
    poisoned: ClassVar[bool] = bool(os.environ.get("READSIDE_POISON"))

    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        if self.poisoned and isinstance(event, BankAccount.Opened) and event.owner == "poison":
            raise ValueError(f"cannot process the account of {event.owner} (secret detail)")
        connection.execute(insert(effects_table).values(position=position))


class Bank(BankAccounts):
    projections: ClassVar[Any] = (Balances, Effects)


install(Bank)
application = api
