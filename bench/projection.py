"""The read side's throughput: events per second a projection runner applies while it catches up on
a backlog (the example's balances projection, in batches of UWSGI_ES_READSIDE_BATCH with its
tracking record), against a plain loop that reads the events table and upserts the same balances
itself (same batch size, one transaction per batch, no tracking record, no domain objects).

In process, no uWSGI: both read from and write to the same database file or server. Each round
runs both, back to back, from an empty read model.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Engine, bindparam, delete, insert, update

from bench.measure import ROUNDS, Row
from bench.targets import ratio_target
from uwsgi_es.example.balances import Balances, balances_table
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.readside import ProjectionRunner
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy.engine import WRITE
from uwsgi_es.stores.sqlalchemy.schema import SELECT_AFTER, SELECT_AFTER_PG, tracking_table

EVENTS = int(os.environ.get("BENCH_PROJECTION_EVENTS", "20000"))
ACCOUNTS = 100
BATCH = Settings.readside_batch
SCENARIO = "projection: catch up"
ANCHOR = "plain loop"
ADD_CHANGE = (
    update(balances_table)
    .where(balances_table.c.account_id == bindparam("key"))
    .values(
        balance=balances_table.c.balance + bindparam("change", type_=BigInteger()),
        version=bindparam("version"),
    )
)


def fill(app: BankAccounts, events: int) -> int:
    """About ``events`` events over ACCOUNTS accounts: each opened, then its deposits saved in one
    batch. Returns how many."""
    per_account = events // ACCOUNTS - 1
    for _ in range(ACCOUNTS):
        account = app.open_account("bench")
        for _ in range(per_account):
            account.deposit(1)
        app.save(account)
    return ACCOUNTS * (per_account + 1)


def reset(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(delete(balances_table))
        connection.execute(delete(tracking_table))


def plain_loop(engine: Engine) -> int:
    """Read the events after the last position, apply them to the balances in two statements per
    batch (as the example's process_batch: inserts, then each account's net change), commit; until
    none is left."""
    position, applied = 0, 0
    feed = SELECT_AFTER_PG if engine.dialect.name == "postgresql" else SELECT_AFTER  # the runner's query
    while True:
        with engine.connect() as connection:
            connection.execution_options(**{WRITE: True})  # SQLite: BEGIN IMMEDIATE, as the runner
            with connection.begin():
                rows = connection.execute(feed, {"after_id": position, "limit": BATCH}).all()
                opened: dict[Any, dict[str, Any]] = {}
                changed: dict[Any, dict[str, Any]] = {}
                for originator, version, topic, state, row_id in rows:
                    data = msgspec.json.decode(state)
                    position = row_id
                    if topic.endswith("Opened"):
                        opened[originator] = {
                            "account_id": originator,
                            "owner": data["owner"],
                            "balance": 0,
                            "version": version,
                        }
                        continue
                    row = opened.get(originator) or changed.setdefault(
                        originator, {"key": originator, "change": 0}
                    )
                    sign = 1 if topic.endswith("Deposited") else -1
                    row["balance" if originator in opened else "change"] += sign * data["amount"]
                    row["version"] = version
                if opened:
                    connection.execute(insert(balances_table), list(opened.values()))
                if changed:
                    connection.execute(ADD_CHANGE, list(changed.values()))
        if not rows:
            return applied
        applied += len(rows)


def timed(run: Callable[[], int], expected: int) -> float:
    started = time.perf_counter()
    applied = run()
    assert applied == expected, f"applied {applied} of {expected}"
    return applied / (time.perf_counter() - started)


def projection_row(url: str, store: str) -> Row:
    app = BankAccounts.from_settings(Settings(database_url=url))
    engine = app.records.engine  # type: ignore[attr-defined]
    try:
        Balances.metadata.create_all(engine)
        stored = fill(app, EVENTS)
        ours, anchor, ratios = [], [], []
        for _ in range(ROUNDS):
            reset(engine)
            a = timed(ProjectionRunner(app, Balances()).catch_up, stored)
            reset(engine)
            b = timed(lambda: plain_loop(engine), stored)
            ours.append(a)
            anchor.append(b)
            ratios.append(a / b)
    finally:
        app.close()
    row = Row(
        SCENARIO, store, "uwsgi_es runner", ANCHOR, ours, anchor, ratios, ratio_target(SCENARIO, ANCHOR)
    )
    print(
        f"{SCENARIO:<28} {store:<11} {statistics.median(ours):8.0f} / {statistics.median(anchor):8.0f} "
        f"events/s, ratio {row.ratio:.2f} (target >= {row.target})",
        flush=True,
    )
    return row
