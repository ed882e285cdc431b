"""Small refusals of the example API and of the settings, on a real uWSGI: invisible or
never-in-a-name characters in an owner, an overlong amount echoed back, a setting written in
non-ASCII digits."""

from __future__ import annotations

from typing import Any

import pytest

from ..support.paths import INI

pytestmark = pytest.mark.integration
StartServer = Any

REFUSED_OWNERS = {  # the owner sent -> the code point the answer must name
    "\u200b": "U+200B",  # zero-width space
    "\u200b\u200c\u2060": "U+200B",  # zero-width non-joiner, word joiner
    " \u200d\u00ad ": "U+200D",  # zero-width joiner, soft hyphen, within spaces
    "\u3164": "U+3164",  # Hangul filler
    "Ann\uffff": "U+FFFF",  # a noncharacter
    "Ann\U0010fffe": "U+10FFFE",  # a noncharacter of the last plane
    "An\ufdd0n": "U+FDD0",
    "Ann\u2028Lee": "U+2028",  # line separator
    "Ann\u2029Lee": "U+2029",  # paragraph separator (at either end it is stripped, as spaces are)
    "\ufeffAnn": "U+FEFF",  # byte order mark
}


def test_owners_invisible_or_holding_what_no_name_holds_are_refused(
    uwsgi_server: StartServer, app_env: dict[str, str]
) -> None:
    """Each gets 400 naming the code point and stores nothing; names that merely use a joiner
    (an emoji sequence, Persian with a zero-width non-joiner) are still accepted."""
    server = uwsgi_server(INI, env=app_env, options=["--processes", "1"])
    for owner, code_point in REFUSED_OWNERS.items():
        answer = server.post("/accounts", {"owner": owner})
        assert answer.status == 400, (owner, answer.body)
        assert code_point in answer.json()["error"], (owner, answer.body)
    assert server.get("/events").json()["events"] == []
    for owner in ("\U0001f469\u200d\U0001f4bb Ann", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"):
        opened = server.post("/accounts", {"owner": owner})
        assert opened.status == 201, opened.body
        assert opened.json()["owner"] == owner


def test_an_overlong_amount_is_not_echoed_back(uwsgi_server: StartServer, app_env: dict[str, str]) -> None:
    """A 4,000-digit amount: 400 naming the range, quoting only the start of the number."""
    server = uwsgi_server(INI, env=app_env, options=["--processes", "1"])
    account = server.post("/accounts", {"owner": "Ann"}).json()["id"]
    digits = "9" * 4000
    answer = server.request(
        "POST",
        f"/accounts/{account}/deposits",
        f'{{"amount": {digits}}}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == 400, answer.body[:300]
    error = answer.json()["error"]
    assert error.startswith("amount must be between 1 and ")
    assert len(answer.body) < 200, len(answer.body)
    assert error.endswith("got 999999999999999999999999...")


def test_a_setting_in_non_ascii_digits_is_refused_naming_it(
    uwsgi_server: StartServer, app_env: dict[str, str]
) -> None:
    """UWSGI_ES_POOL_SIZE set to U+0665 (Arabic-Indic five) is not read as 5: the worker answers 503 and names
    the variable, the value and what is accepted."""
    env = {**app_env, "UWSGI_ES_POOL_SIZE": "\u0665"}
    server = uwsgi_server(INI, env=env, options=["--processes", "1"], wait_for="health")
    assert server.get("/ready").status == 503
    detail = server.get("/worker").json()["detail"]
    assert "UWSGI_ES_POOL_SIZE='\u0665' is not a whole number" in detail, detail
    assert "ASCII digits" in detail
