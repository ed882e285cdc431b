"""`make bench-rebuild`: what `uwsgi-es rebuild balances` costs with BENCH_REBUILD_EVENTS events
stored (10^6 by default; accounts of 10 events, generated in the database as `make bench-scale`
does), on SQLite and PostgreSQL, with the live runner following and one writer depositing.

Per store: the fill's rate (events/s into the new read model), how long the switch held the live
tracking record (PostgreSQL: the tables are moved, whatever their size; SQLite: the new tables are
copied into the live file, so its writers wait for the copy), the rows switched in, and the
writer's deposit latency during the rebuild (median, and the longest: a deposit that waited for the
switch). Printed as a Markdown table for the notes; nothing here is a pass/fail check.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

from sqlalchemy import create_engine

from bench.scale import databases, fill, prepare_catch_up
from uwsgi_es.example.balances import Balances
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.readside import ProjectionRunner
from uwsgi_es.readside.rebuild import rebuild
from uwsgi_es.settings import Settings

EVENTS = int(os.environ.get("BENCH_REBUILD_EVENTS", "1000000"))


def measure(store: str, url: str) -> str:
    engine = create_engine(url)
    try:
        fill(engine, 1, EVENTS)
        prepare_catch_up(engine, EVENTS)
    finally:
        engine.dispose()
    with BankAccounts.from_settings(Settings(database_url=url)) as app:
        live = ProjectionRunner(app, Balances())
        live.catch_up()
        stop = threading.Event()
        follower = threading.Thread(target=live.run, args=(stop,))
        account = app.open_account("writer").id
        latencies: list[float] = []

        def write() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                app.deposit(account, 1)
                latencies.append(time.perf_counter() - started)

        writer = threading.Thread(target=write)
        follower.start()
        writer.start()
        try:
            done = rebuild(app, "balances")
        finally:
            stop.set()
            writer.join()
            follower.join()
    rate = done.events / done.fill_seconds
    median = statistics.median(latencies) * 1000
    return (
        f"| {store} | {done.events:,} | {done.fill_seconds:.1f} s | {rate:,.0f} | "
        f"{done.switch_seconds * 1000:.0f} ms | {done.rows:,} | {median:.1f} ms | {max(latencies) * 1000:.0f} ms |"
    )


def main() -> None:
    rows = [
        "| store | events rebuilt | fill | events/s | switch | rows switched | deposit median | deposit max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with databases() as stores:
        for store, make in stores:
            url, _ = make("rebuild")
            rows.append(measure(store, url))
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
