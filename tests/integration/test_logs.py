"""Structured logs on a real uWSGI: UWSGI_ES_LOG_FORMAT=json, request ids, slow requests, and
uWSGI's own request log in the same shape (the log-format line documented in uwsgi.ini)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from uwsgi_es.lifecycle.events import events_in

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
