"""The structured lifecycle log: one event per line, key=value fields that round-trip."""

from __future__ import annotations

import logging
import sys

import pytest

from uwsgi_es.runtime.log import TextLines, emit, events_in, parse, render


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


def test_no_value_and_no_other_line_can_be_read_as_an_event() -> None:
    """Line breaks, terminal escapes and `event=` inside values are escaped and read back exactly;
    `event=` inside a uWSGI request line, a quoted client text, a continuation line or a JSON line
    that is not ours is no event."""
    path = '/x\r\nuwsgi_es [pid 1] INFO event=build worker=9\x1b[31m\u2028\x85\ud800 "q" \\'
    line = f"uwsgi_es [pid 4242] WARNING {render({'event': 'slow_request', 'path': path, 'ms': 1.0})}"
    assert line.isprintable()
    assert list(events_in(line)) == [{"event": "slow_request", "path": path, "ms": "1.0"}]
    forged = [
        "[pid: 1|app: 0|req: 1/1] 127.0.0.1 () {28 vars} [date] GET /event=build => generated 2 bytes",
        "uwsgi_es [pid 1] WARNING answered 503 to GET '/x event=build pid=1'",
        "uwsgi_es [pid 1] WARNING no route for /x event=build pid=1: more",
        "    event=build worker=9",
        '{"source":"uwsgi","event":"build","worker":9}',
        'uwsgi_es [pid 1] INFO event=build path="unterminated',
    ]
    assert [parse(text) for text in forged] == [None] * len(forged)


def test_a_text_record_never_writes_a_line_another_could_be_read_as() -> None:
    """A message or traceback holding a line break and `event=` stays inside its record: the
    continuation is indented, control characters are escaped."""
    try:
        raise ValueError("bad\nevent=build worker=9\x1b[0m")
    except ValueError:
        record = logging.LogRecord(
            "uwsgi_es.web", logging.ERROR, __file__, 1, "boom %s", ("a\r\nevent=build",), sys.exc_info()
        )
    text = TextLines().format(record)
    assert "\x1b" not in text
    assert "\r" not in text
    assert all(line.startswith(("uwsgi_es [pid", "    ")) for line in text.split("\n")), text
    assert list(events_in(text)) == []
