"""The library's read side on uwsgi_es's Cassandra module for it: the example's audit (an
``EventSourcedProjection``) followed by the runner a mule runs, on the real Cassandra node; its
notification log is gap-free, so the runner's polling misses nothing and counts nothing twice."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from uwsgi_es.integrations.eventsourcing import construct, migrate
from uwsgi_es.settings import Settings
from uwsgi_es.testing.cassandra import CassandraNode

from ..support.library import recorded, running

pytestmark = pytest.mark.cassandra
_numbers = itertools.count()


def test_the_audit_follows_the_bank_on_cassandra_exactly_once(
    cassandra: CassandraNode, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from examples.eventsourcing_bank.application import BankAccounts

    monkeypatch.setenv("PERSISTENCE_MODULE", "uwsgi_es.integrations.eventsourcing.cassandra")
    monkeypatch.setenv("CASSANDRA_PORT", str(cassandra.native_port))
    monkeypatch.setenv("CASSANDRA_KEYSPACE", f"audit_{os.getpid()}_{next(_numbers)}")
    settings = Settings(projections="examples.eventsourcing_bank.audit:Audit")
    migrate(BankAccounts, settings)
    bank = construct(BankAccounts)
    try:
        account = bank.open_account("on cassandra")
        for amount in (5, 6, 7):
            bank.deposit(account.id, amount)
        bank.withdraw(account.id, 3)
        for applied in (4, 0):  # the second runner: a respawned mule, resuming after the first
            with running(bank, "audit", settings) as runner:
                assert runner.catch_up() == applied
                assert runner.view.max_tracking_id("BankAccounts") == 5
                assert [(e.movement, e.amount, e.position) for e in recorded(runner)] == [
                    ("deposit", 5, 2),
                    ("deposit", 6, 3),
                    ("deposit", 7, 4),
                    ("withdrawal", 3, 5),
                ]
    finally:
        bank.close()
