"""The read side under real uWSGI when something around it is wrong, on SQLite and on the real
PostgreSQL: a database migrated without the application (no read-model table: reads and /ready
answer 503 naming the fix, and migrating heals it without a restart), and a database shared with
another application (its events passed over by both runner mules, /ready stays 200)."""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, select

from uwsgi_es.cli import migrate
from uwsgi_es.example.balances import balances_table
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store
from uwsgi_es.stores.base import StoredRecord
from uwsgi_es.stores.sqlalchemy.schema import tracking_table
from uwsgi_es.testing import lifecycle_events

from ..support.paths import INI
from .test_readside import APP, TWO_RUNNERS, caught_up, env_for, fold, read_models

pytestmark = pytest.mark.integration
StartServer = Any
# Topics of an application whose classes no process of this instance defines.
THEIR_TOPICS = ("other_app.domain:Thing.Happened", "other_app.domain:Thing.Moved")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database with the read models of tests.apps.readside_app:Bank too (its Effects)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    migrate(Settings(database_url=url, application=APP))
    return url


def tracked_error(url: str, projection: str) -> str | None:
    """The error column of the projection's tracking record (None without one)."""
    engine = create_engine(url)
    with engine.connect() as connection:
        error = connection.execute(
            select(tracking_table.c.error).where(tracking_table.c.projection == projection)
        ).scalar()
    engine.dispose()
    return error


def store_theirs(url: str, topic: str, count: int) -> None:
    """Another application's events, stored in the same database as the bank's."""
    store = create_record_store(Settings(database_url=url))
    try:
        thing = uuid4()
        state = '{"timestamp": "2024-01-01T00:00:00Z", "detail": "theirs"}'
        store.append([StoredRecord(thing, version, topic, state) for version in range(1, count + 1)])
    finally:
        store.close()


def test_without_its_read_model_reads_and_ready_answer_503_naming_the_fix(
    uwsgi_server: StartServer, database_url: str
) -> None:
    """`uwsgi-es migrate` run without naming the application leaves no balances table: GET
    /balances answers 503 naming the projection, the table and the fix (it was a 500), /ready
    answers 503 on every worker naming the projection (it was 200, with a growing lag), and the
    mule records why it cannot run. Once migrated with the application, the mule catches up by
    itself, /ready answers 200 and the cause is cleared: no restart."""
    engine = create_engine(database_url)
    balances_table.drop(engine)
    engine.dispose()
    server = uwsgi_server(INI, env=env_for(database_url), wait_for="health")
    account = server.post("/accounts", {"owner": "before the table"}).json()["id"]
    read = server.get("/balances")
    assert read.status == 503, read.body
    message = read.json()["error"]
    assert "'balances'" in message
    assert "table balances" in message
    assert "uwsgi-es migrate" in message
    assert read.headers.get("retry-after") == "1"
    for _ in range(8):  # every worker
        ready = server.get("/ready")
        assert ready.status == 503, ready.body
        assert "'balances'" in ready.json()["error"]
        assert "uwsgi-es migrate" in ready.json()["error"]
    deadline = time.monotonic() + 15
    while not (tracked_error(database_url, "balances") or "").startswith("ReadModelMissingError"):
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    waiting = list(lifecycle_events(server.log(), "projection_waiting"))
    assert "uwsgi-es migrate" in waiting[0]["error"]
    migrate(Settings(database_url=database_url, application=APP))
    server.wait_until_ready()
    caught_up(server)
    answer = server.get(f"/balances/{account}")
    assert (answer.status, answer.json()["balance"]) == (200, 0), answer.body
    assert tracked_error(database_url, "balances") is None


def test_a_database_shared_with_another_application(uwsgi_server: StartServer, database_url: str) -> None:
    """The database also holds another application's events, of classes no process here defines:
    both runner mules pass over them and project the bank's; /ready stays 200 on every worker;
    Effects (it handles every topic it can read) logs each foreign topic once, Balances (it
    declares `handles`) passes over silently; nothing stops."""
    store_theirs(database_url, THEIR_TOPICS[0], 3)
    server = uwsgi_server(INI, env=env_for(database_url), options=TWO_RUNNERS)
    account = server.post("/accounts", {"owner": "shared"}).json()["id"]
    store_theirs(database_url, THEIR_TOPICS[1], 2)
    assert server.post(f"/accounts/{account}/deposits", {"amount": 7}).status == 200
    store_theirs(database_url, THEIR_TOPICS[0], 1)
    written = server.post(f"/accounts/{account}/deposits", {"amount": 5})
    read = server.get(f"/balances/{account}", headers={"X-Min-Position": written.headers["x-event-position"]})
    assert (read.status, read.json()["balance"]) == (200, 12), read.body
    caught_up(server)
    for _ in range(8):
        ready = server.get("/ready")
        assert ready.status == 200, ready.body
    balances, events, last = fold(database_url)
    model, positions, effects = read_models(database_url)
    assert model == balances
    assert positions == {"balances": last, "effects": last}
    assert effects == (events, events)
    passed = lifecycle_events(server.log(), "projection_passed_over")
    assert sorted((e["projection"], e["topic"]) for e in passed) == [("effects", t) for t in THEIR_TOPICS]
    assert "event=projection_stopped" not in server.log()
