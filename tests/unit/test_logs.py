"""JSON log lines and request ids, in process."""

from __future__ import annotations

import json
import logging
import re

from uwsgi_es.runtime.log import JsonLines, parse, render, request_id
from uwsgi_es.web import request_ids
from uwsgi_es.web.http import Request


def record(**fields: object) -> logging.LogRecord:
    made = logging.LogRecord("uwsgi_es.lifecycle", logging.INFO, __file__, 1, "%s", (render(fields),), None)
    made.uwsgi_es = fields
    return made


def test_a_json_line_carries_the_event_the_process_and_the_request() -> None:
    token = request_id.set("abc-1")
    try:
        line = JsonLines().format(record(event="build", ms=12.25, store='a "quoted" store'))
    finally:
        request_id.reset(token)
    entry = json.loads(line)
    assert (entry["event"], entry["ms"], entry["store"]) == ("build", 12.25, 'a "quoted" store')
    assert (entry["request_id"], entry["level"], entry["worker"]) == ("abc-1", "INFO", 0)
    assert isinstance(entry["pid"], int)
    assert parse(line) == {**{k: str(v) for k, v in entry.items() if v is not None}, "ms": "12.2"}
    plain = JsonLines().format(logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("1",), None))
    assert json.loads(plain)["message"] == "boom 1"
    assert parse(plain) is None


def test_a_request_keeps_a_plausible_id_and_gets_a_new_one_otherwise() -> None:
    def sent(value: str | None) -> str:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
        if value is not None:
            environ["HTTP_X_REQUEST_ID"] = value
        return request_ids.identify(Request(environ), json_logs=True)

    assert sent("trace-42") == "trace-42"
    assert (
        sent("00-4bf92f3577b34da6-00f067aa0ba902b7-01.span_1:2")
        == "00-4bf92f3577b34da6-00f067aa0ba902b7-01.span_1:2"
    )
    refused = ["has space", "x" * 129, "é", 'x","status":200,"forged":"yes","y":"', "a\\", "a'b", "a{b}"]
    made = {sent(None), sent(None), *(sent(value) for value in refused)}
    assert len(made) == 2 + len(refused)
    assert all(0 < len(identity) <= request_ids.MAX_LENGTH for identity in made)
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]+", identity) for identity in made)
