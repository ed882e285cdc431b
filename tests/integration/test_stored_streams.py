"""Streams repaired or damaged under a running uWSGI (SQLite): a snapshot left over from events
that were cut back and written again is never folded onto, and a stream with a version missing
answers the documented 503 naming the record, never a 500."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from typing import Any
from uuid import UUID

import pytest

from ..support.checks import all_events
from ..support.paths import INI

pytestmark = pytest.mark.integration
StartServer = Any


def database(sqlite_url: str) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=30))


def fold(events: list[dict[str, Any]]) -> int:
    """The balance the stored events of an account add up to."""
    signs = {"Deposited": 1, "Withdrawn": -1}
    return sum(signs.get(e["topic"].rsplit(".", 1)[-1], 0) * e["state"].get("amount", 0) for e in events)


@pytest.mark.reliability
def test_a_snapshot_of_events_since_rewritten_is_refused(
    uwsgi_server: StartServer, sqlite_url: str, report: Any
) -> None:
    """An account snapshotted at 99,000,000; its events then replaced by an older history that
    folds to 0 (a restore from another backup, as the corrupt-row advice leads to): both workers
    answer the fold of the stored events, refuse a withdrawal of 50,000,000, and log the stale
    snapshot once, naming the account and the version."""
    env = {"UWSGI_ES_DATABASE_URL": sqlite_url, "UWSGI_ES_SNAPSHOT_INTERVAL": "10"}
    server = uwsgi_server(INI, env=env, options=["--processes", "2"])
    rich = server.post("/accounts", {"owner": "rich"}).json()["id"]
    for _ in range(10):  # versions 2..11: the save of version 10 is snapshotted (9 deposits)
        assert server.post(f"/accounts/{rich}/deposits", {"amount": 11_000_000}).status == 200
    other = server.post("/accounts", {"owner": "even"}).json()["id"]
    for _ in range(5):  # versions 2..11, balance 0
        assert server.post(f"/accounts/{other}/deposits", {"amount": 1}).status == 200
        assert server.post(f"/accounts/{other}/withdrawals", {"amount": 1}).status == 200
    with database(sqlite_url) as db, db:
        snapshot = db.execute(
            "SELECT originator_version, state FROM uwsgi_es_snapshots WHERE originator_id = ?",
            (UUID(rich).hex,),
        ).fetchone()
        assert snapshot is not None
        assert snapshot[0] == 10, snapshot
        assert "99000000" in snapshot[1], snapshot
        # The events cut back to the opening, and the other history stored in their place.
        db.execute(
            "DELETE FROM integer_sequenced_items WHERE originator_id = ? AND originator_version > 1",
            (UUID(rich).hex,),
        )
        db.execute(
            "INSERT INTO integer_sequenced_items (originator_id, originator_version, topic, state) "
            "SELECT ?, originator_version, topic, state FROM integer_sequenced_items "
            "WHERE originator_id = ? AND originator_version > 1",
            (UUID(rich).hex, UUID(other).hex),
        )
    stored = fold(all_events(server, rich))
    assert stored == 0
    balances = {server.get(f"/accounts/{rich}").json()["balance"] for _ in range(8)}  # both workers
    assert balances == {stored}, f"answered {balances}, the stored events fold to {stored}"
    refused = server.post(f"/accounts/{rich}/withdrawals", {"amount": 50_000_000})
    assert refused.status == 409, refused.body
    assert "insufficient funds" in refused.json()["error"]
    assert fold(all_events(server, rich)) == 0
    stale = re.findall(rf"snapshot of {rich} at version 10.*is stale", server.log())
    assert 1 <= len(stale) <= 2, server.log()[-3000:]  # once per worker that loaded it
    report(
        "a stale snapshot refused",
        env,
        f"snapshot at version 10 holding 99,000,000, events replaced by a history folding to 0: "
        f"balance answered {sorted(balances)} by both workers, a withdrawal of 50,000,000 refused "
        f"(409), the stale snapshot logged {len(stale)}x (once per worker)",
    )


def test_a_stream_with_a_version_missing_answers_503_naming_the_record(
    uwsgi_server: StartServer, sqlite_url: str
) -> None:
    """Events 1, 2 and 4 stored (3 deleted): reads and writes of the account answer 503 "a stored
    event cannot be read; an operator must repair it", and the log names the version and position."""
    server = uwsgi_server(INI, env={"UWSGI_ES_DATABASE_URL": sqlite_url}, options=["--processes", "1"])
    account = server.post("/accounts", {"owner": "gap"}).json()["id"]
    for amount in (1, 2, 3):
        assert server.post(f"/accounts/{account}/deposits", {"amount": amount}).status == 200
    with database(sqlite_url) as db, db:
        position = db.execute(
            "SELECT id FROM integer_sequenced_items WHERE originator_id = ? AND originator_version = 4",
            (UUID(account).hex,),
        ).fetchone()[0]
        db.execute(
            "DELETE FROM integer_sequenced_items WHERE originator_id = ? AND originator_version = 3",
            (UUID(account).hex,),
        )
    answers = [
        server.get(f"/accounts/{account}"),
        server.post(f"/accounts/{account}/deposits", {"amount": 5}),
    ]
    for answer in answers:
        assert answer.status == 503, answer.body
        assert answer.json() == {"error": "a stored event cannot be read; an operator must repair it"}
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert f"do not follow on at version 4 (position {position}" in log, log[-3000:]
    assert [e["version"] for e in all_events(server, account)] == [1, 2, 4]  # nothing was added
