"""Structured logs on a real uWSGI: UWSGI_ES_LOG_FORMAT=json, request ids, slow requests, and
uWSGI's own request log in the same shape (the log-format line documented in uwsgi.ini)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import pytest

from uwsgi_es.runtime.log import events_in
from uwsgi_es.testing import lifecycle_events

from ..support.paths import INI

pytestmark = pytest.mark.integration


def documented_log_format() -> str:
    """The JSON request-log format uwsgi.ini documents (commented out there)."""
    found = re.search(r"^; log-format = (\{.*\})$", INI.read_text(), re.MULTILINE)
    assert found, "uwsgi.ini no longer documents a JSON log-format"
    return found.group(1)


def json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_json_logs_carry_worker_pid_and_the_request_id(uwsgi_server: Any, app_env: dict[str, str]) -> None:
    """Every uwsgi_es line is a JSON object; a request's id (the client's, or a new one) is echoed
    and carried by the lines written while it is served; uWSGI's request lines parse as JSON too,
    with a URI that needs escaping."""
    env = {**app_env, "UWSGI_ES_LOG_FORMAT": "json", "UWSGI_ES_SLOW_REQUEST_MS": "1"}
    server = uwsgi_server(INI, env=env, options=["--processes", "2", "--log-format", documented_log_format()])
    opened = server.post("/accounts", {"owner": "logs"}, headers={"X-Request-ID": "client-id-1"})
    assert opened.status == 201
    assert opened.headers["x-request-id"] == "client-id-1"
    made = [server.get("/health").headers["x-request-id"] for _ in range(3)]
    assert len(set(made)) == 3, made
    refused = server.get('/no"such', headers={"X-Request-ID": "bad id with spaces"})
    assert refused.status == 404
    assert refused.headers["x-request-id"] != "bad id with spaces"

    # The projection mule builds in parallel with the requests, and uWSGI writes a request's log
    # line after its response has gone: wait for both rather than race them.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log = server.log()
        if '"mule":1' in log and '"status":404' in log.replace(" ", ""):
            break
        time.sleep(0.1)
    ours = [entry for entry in json_lines(log) if entry.get("source") != "uwsgi"]
    builds = [entry for entry in ours if entry.get("event") == "build"]
    assert sorted(entry["worker"] for entry in builds if not entry.get("mule")) == [1, 2]
    assert [entry["worker"] for entry in builds if entry.get("mule")] == [0]  # the projection mule
    assert all(isinstance(entry["pid"], int) and entry["level"] == "INFO" for entry in builds)
    assert [e["worker"] for e in events_in(log, "build")] == [str(e["worker"]) for e in builds]
    slow = [entry for entry in ours if entry.get("event") == "slow_request"]
    assert any(e["request_id"] == "client-id-1" and e["path"] == "/accounts" for e in slow), slow
    assert not [line for line in log.splitlines() if line.startswith("uwsgi_es [pid")], "a text line"

    requests = [entry for entry in json_lines(log) if entry.get("source") == "uwsgi"]
    missing = [entry for entry in requests if entry["status"] == 404]
    assert missing, log[-2000:]
    assert missing[0]["uri"] == '/no"such'
    assert missing[0]["request_id"] == refused.headers["x-request-id"]
    assert missing[0]["method"] == "GET"


FORGED_ID = 'x","status":200,"forged":"yes","y":"'
HOSTILE_SEGMENTS = [  # account ids a client sends, each meant to end or forge a log line
    "x\r\nuwsgi_es [pid 1] INFO event=build worker=9 pid=1\x1b[31m",
    "y\revent=build worker=9",
    "z event=build worker=9 pid=1",
    '\n{"event":"build","logger":"uwsgi_es.lifecycle","worker":9}',
    "\u2028event=build worker=9\x85",
]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_client_can_forge_or_break_a_log_line(uwsgi_server: Any, sqlite_url: str, log_format: str) -> None:
    """A forged X-Request-ID (quotes, a backslash) is replaced, so uWSGI's JSON request line (the
    documented log-format) parses as what it is; paths full of line breaks, terminal escapes and
    `event=build` are logged by slow_request escaped, read back exactly, and the harness's parser
    reads no event out of them, in both formats. (Holding the SQLite writers' lock makes each of
    those requests slow: with an Idempotency-Key it waits for a write transaction, then 503.)"""
    env = {
        "UWSGI_ES_DATABASE_URL": sqlite_url,
        "UWSGI_ES_SLOW_REQUEST_MS": "1",
        "UWSGI_ES_LOG_FORMAT": log_format,
        "UWSGI_ES_SQLITE_BUSY_TIMEOUT_MS": "100",
    }
    options = ["--processes", "1"]
    if log_format == "json":
        options += ["--log-format", documented_log_format()]
    server = uwsgi_server(INI, env=env, options=options)
    forged = server.get("/no-such", headers={"X-Request-ID": FORGED_ID})
    slashed = server.get("/no-such-either", headers={"X-Request-ID": "a\\"})
    assert (forged.status, slashed.status) == (404, 404)
    assert forged.headers["x-request-id"] != FORGED_ID
    assert slashed.headers["x-request-id"] != "a\\"
    database = sqlite_url.removeprefix("sqlite:///")
    holder = os.open(f"{database}.writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        for segment in HOSTILE_SEGMENTS:
            answer = server.post(
                f"/accounts/{quote(segment, safe='')}/deposits",
                {"amount": 1},
                headers={"Idempotency-Key": str(uuid4())},
            )
            assert answer.status == 503, answer.body
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    expected = {f"/accounts/{segment}/deposits" for segment in HOSTILE_SEGMENTS}
    deadline = time.monotonic() + 15  # uWSGI writes a request's line after its response
    while time.monotonic() < deadline and server.log().count("slow_request") < len(expected):
        time.sleep(0.1)
    log = server.log()
    for character in ("\r", "\x1b", "\u2028", "\x85"):
        assert character not in log, f"{character!r} reached the log"
    events = list(lifecycle_events(log))
    assert [e for e in events if e.get("worker") == "9"] == [], "a forged event was read back"
    assert len([e for e in events if e["event"] == "build"]) == 2  # the worker and the projection mule
    slow = [e for e in events if e["event"] == "slow_request" and e["status"] == "503"]
    assert {e["path"] for e in slow} == expected
    if log_format == "json":
        lines = [line for line in log.split("\n") if line.startswith("{")]
        entries = [json.loads(line) for line in lines]  # every one parses
        requests = [entry for entry in entries if entry.get("source") == "uwsgi"]
        missing = [entry for entry in requests if entry["uri"] == "/no-such"]
        assert len(missing) == 1, requests
        assert missing[0]["status"] == 404
        assert missing[0]["request_id"] == forged.headers["x-request-id"]
        assert "forged" not in missing[0]
        assert not [line for line in log.split("\n") if line.startswith("uwsgi_es [pid")], "a text line"
