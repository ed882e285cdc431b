"""The structured lifecycle log: one event per line, key=value fields that round-trip."""

from __future__ import annotations

import logging

import pytest

from uwsgi_es.lifecycle.events import emit, events_in, parse, render


def test_fields_round_trip_through_a_log_line() -> None:
    fields = {
        "event": "build",
        "worker": 3,
        "pid": 4242,
        "store": 'SQLAlchemy store at sqlite:////srv/a b.sqlite3 "quoted" = x',
        "ms": 12.345,
        "skipped": None,
    }
    line = f"uwsgi_es [pid 4242] INFO {render(fields)}"
    assert parse(line) == {
        "event": "build",
        "worker": "3",
        "pid": "4242",
        "store": 'SQLAlchemy store at sqlite:////srv/a b.sqlite3 "quoted" = x',
        "ms": "12.3",
    }
    assert parse("uwsgi_es [pid 1] INFO something else") is None


def test_emit_logs_one_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="uwsgi_es.lifecycle"):
        emit("build", worker=1, pid=7, application="BankAccounts")
        emit("close", worker=1, pid=7, released="a\\nb")
    assert [e["event"] for e in events_in(caplog.text)] == ["build", "close"]
    assert next(iter(events_in(caplog.text, "close")))["released"] == "a\\nb"
    assert caplog.records[0].uwsgi_es == {  # type: ignore[attr-defined]
        "event": "build",
        "worker": 1,
        "pid": 7,
        "application": "BankAccounts",
    }
