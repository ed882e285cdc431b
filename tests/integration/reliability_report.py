"""Render the figures collected by `make reliability` (JSON lines) as docs/RELIABILITY.md."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

ORDER = [
    "killed workers",
    "chain reload (lazy-apps)",
    "full reload (touch-reload)",
    "database outage (5 s)",
    "initialiser failure (database unreachable at start)",
    "initialiser failure, fail-fast (invalid setting)",
    "initialiser failure, fail-fast (unreachable database)",
    "hostile input (hypothesis)",
    "clean stop (SIGINT)",
    "clean stop (SIGTERM)",
]

INTRO = """# Reliability

What uwsgi_es promises on its worst days, and the figures of the last run that proved it. Every row
is an automated test in `make test` (real uWSGI, a real PostgreSQL, a real Cassandra node); this
file is regenerated, figures included, by:

    make reliability

The scenarios (tests/integration/test_reliability.py, test_hostile_input.py, test_uwsgi_modes.py):

- **Killed workers**: under continuous deposits (8 clients, unique amounts), a random worker is
  SIGKILLed every 2 s for 20 s. Only requests in flight on a killed worker may fail; every
  acknowledged deposit is stored exactly once; versions stay 1..n; every replacement builds once.
- **Reloads**: `touch-chain-reload` (lazy-apps) replaces every worker under load with zero failed
  requests; a full `touch-reload` may fail requests in flight but loses no acknowledged write.
- **Database outage**: the database is stopped for 5 s under load (8 clients, an account each, so
  no command can conflict) and started again. Meanwhile
  every request gets a JSON 503 naming the store (never a 500, never a hang) and `/ready` fails;
  the workers serve again within 5 s of the database answering, without restarting uWSGI.
- **Initialiser failure**: without fail-fast, workers answer 503 and retry with back-off until the
  database appears; with `UWSGI_ES_FAIL_FAST=true` uWSGI exits non-zero within seconds, naming
  the problem, without a respawn storm.
- **Hostile input**: 10,000 property-based malformed requests per store (hypothesis, raw sockets):
  zero 5xx, zero worker deaths, and only accepted requests change the store.
- **Clean stop**: SIGINT and SIGTERM stop the instance within 5 s; each worker closes its
  application (engine disposed, Cassandra cluster shut down) and logs it.

"Failed" counts requests that got no 200 (connection errors during a kill or reload, 503 during
an outage). "Stored though failed" are deposits whose request failed in flight after the write
committed: allowed, never duplicated. "Lost" (acknowledged but not stored) and "duplicated" must
be 0, and are.
"""


def main(path: str) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rank = {name: i for i, name in enumerate(ORDER)}
    rows.sort(key=lambda r: (rank.get(r["scenario"], len(ORDER)), r["store"]))
    print(INTRO)
    print(f"## Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}.\n")
    print("| scenario | store | figures |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['scenario']} | {row['store']} | {row['figures'].replace('|', '/')} |")


if __name__ == "__main__":
    main(sys.argv[1])
