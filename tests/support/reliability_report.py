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
    "killed workers, clients retry with Idempotency-Key",
    "full reload, clients retry with Idempotency-Key",
    "chain reload, eventsourcing library app (lazy-apps)",
    "eventsourcing library app, 4x4 concurrent commands",
    "projection mules killed under load",
    "LISTEN connection terminated under load",
    "read side at the maximum write rate",
    "read your writes (1,000 pairs, 8 at a time)",
    "the feed with an outside transaction open",
    "anonymous waiting reads vs /health answered",
    "database outage (5 s)",
    "failover to a standby (synchronous replication)",
    "failover to a standby (asynchronous replication)",
    "two hosts, three nodes: concurrent deposits and withdrawals",
    "one of three nodes SIGKILLed under load (two hosts)",
    "two of three nodes down (two hosts)",
    "one of three nodes paused (SIGSTOP) for 8 s under load (two hosts)",
    "two instances on one PostgreSQL, each tailing /events",
    "initialiser failure (database unreachable at start)",
    "initialiser failure, fail-fast (invalid setting)",
    "initialiser failure, fail-fast (unreachable database, prefork)",
    "initialiser failure, fail-fast (unreachable database, lazy-apps)",
    "hostile input (hypothesis)",
    "slow clients (uwsgi.ini)",
    "slow clients (deploy/uwsgi-postgres.ini)",
    "1,000 slow senders reconnecting (uwsgi.ini)",
    "oversized bodies",
    "request size limits",
    "secrets and 503 bodies",
    "lock held on the events table (PostgreSQL)",
    "SQLite write lock held by another process",
    "request latency with a lock held",
    "SQLite file deleted under the server",
    "SQLite file read-only, then writable",
    "disk full under SQLite",
    "PostgreSQL read-only, then writable",
    "/ready flood vs deposits",
    "a stale snapshot refused",
    "clean stop (SIGINT)",
    "clean stop (SIGTERM)",
    "killed workers, uvicorn",
    "killed workers, granian asgi",
    "killed workers, gunicorn asgi",
    "graceful reload under load, uvicorn",
    "graceful reload under load, granian asgi",
    "graceful reload under load, granian wsgi",
    "graceful reload under load, gunicorn asgi",
    "hostile input under uvicorn",
    "hostile input under granian asgi",
    "hostile input under granian wsgi",
    "hostile input under gunicorn asgi",
]

INTRO = """# Reliability

What uwsgi_es promises on its worst days, and the figures of the last run that proved it. Every row
is an automated test in `make test` (real uWSGI, a real PostgreSQL, a real Cassandra node); this
file is regenerated, figures included, by:

    make reliability

The scenarios (tests/integration/test_reliability.py, test_hostile_input.py, test_uwsgi_modes.py,
test_hostile_clients.py, test_sick_storage.py):

- **Killed workers**: under continuous deposits (8 clients, unique amounts), a random worker is
  SIGKILLed every 2 s for 20 s. Only requests in flight on a killed worker may fail; every
  acknowledged deposit is stored exactly once; versions stay 1..n; every replacement builds once.
- **Reloads**: `touch-chain-reload` (lazy-apps) replaces every worker under load with zero failed
  requests; a full `touch-reload` may fail requests in flight but loses no acknowledged write.
- **PostgreSQL through PgBouncer** (`pool_mode = transaction`, deploy/pgbouncer.ini, 3 server
  connections): the killed-workers and full-reload scenarios again, rows "PostgreSQL via
  PgBouncer"; the store contract, 16 writers with a tailing reader and the shipped launch with its
  mule run through it too (tests/stores/test_postgres.py, test_event_feed.py, test_pgbouncer.py).
- **Clients that retry with an `Idempotency-Key`**: the same kills and full reload (SQLite and
  PostgreSQL), each deposit sent with a key of its own and sent again after any failure until
  answered. A first attempt may be stored while its answer is lost (the rows count them): its
  repeat gets the stored answer and stores nothing, so every deposit ends acknowledged (100 %),
  none is lost, none is stored twice.
- **Applications of the eventsourcing library** (tests/integration/test_eventsourcing.py): the
  same chain reload with the library-written bank on `eventsourcing.postgres`; and 4 workers x 4
  threads depositing and withdrawing on 3 shared accounts on each persistence module, the
  library refusing conflicting saves and uwsgi_es's `retry_on_conflict` re-running them: every
  acknowledged operation stored once, versions 1..n, balances the sum of what was acknowledged.
- **The read side** (tests/integration/test_readside.py): under write load a projection mule is
  SIGKILLed every 2 s for 20 s; uWSGI respawns it and it resumes from its tracking record; after
  the load the read model equals a fold of the stored events, each projection's position is the
  last event's, and a projection counting its events saw each once. The runners' LISTEN
  connections terminated under load (PostgreSQL, 8 writers): they poll until they listen again,
  and a read asking for its own write is answered. At the maximum write rate (uwsgi.ini as
  shipped, wrk depositing flat out for 60 s over 64 accounts, a client reading each of its writes
  back): the projection is at most one second of writes behind when the load stops and at 0
  within 2 s, every read sees its write, no deposit fails, the read model equals the fold.
  1,000 write-then-read pairs over 4 workers: every read asking for its write's position
  (`X-Min-Position`) shows it.
- **The feed with transactions open outside it** (tests/integration/test_feed_horizon.py,
  PostgreSQL, 4 workers and the mule): sessions that append no event (another database's, idle
  with a transaction id or in `pg_sleep`; this database's, idle after writing a table of its own)
  hold neither `/events`, nor the projection, nor reads of one's own writes; a transaction that
  appends and stays open holds the feed (nothing after it is shown before it ends, nothing is
  skipped) while `/worker`, `/ready` and `/metrics` count the events stored after it.
- **Database outage**: the database is stopped for 5 s under load (8 clients, an account each, so
  no command can conflict) and started again. Meanwhile every request gets a JSON 503 saying
  "the event store is unavailable" (the log names the store; never a 500, never a hang; none of
  them stored) and `/ready` fails; the workers serve again within 5 s of the database answering,
  without restarting uWSGI. A write whose connection broke after it was sent and before its
  answer (at most one per client, as the server went away) answers 504 "it may have been stored".
- **A standby takes over** (tests/integration/test_failover.py): the shipped launch on a primary
  and a streaming standby, a URL naming both with `target_session_attrs=read-write`, 8 clients
  depositing; the primary's postmaster and backends are SIGKILLed and the standby promoted 1 s
  later. Synchronous replication: nothing acknowledged lost. Either: nothing stored twice, nothing
  answered 503 stored (504 "may have been stored" when an append's connection broke unanswered),
  no 500, writes resume without restarting uWSGI, a tailing reader's feed stays in order, the mule
  resumes, and the old primary rejoined as a standby takes no writes.
- **Beyond one machine** (tests/integration/test_cluster.py, docs/SCALING.md): three real
  Cassandra nodes on 127.0.0.1-3, a keyspace replicated 3 times, LOCAL_QUORUM / LOCAL_SERIAL,
  two uWSGI instances ("hosts") writing to shared accounts. One node SIGKILLed under load: only
  requests in flight fail, nothing acknowledged is lost or doubled, balances match; restarted, it
  rejoins and, after a repair, each replica read alone holds the same rows. Two nodes down:
  writes answer 503 naming the lost quorum (never a 200; nothing refused is stored) and succeed
  again by themselves once one node is back. One node paused (SIGSTOP) 8 s: nothing lost; no
  read fails (another replica answers it), a write it coordinated is settled by sending it again
  (none failed in the recorded runs); the slowest answer under 12 s (a 5 s request timeout, plus
  waiting behind a stalled request of the same worker). Two instances on one PostgreSQL, each
  tailing `/events`: the same events, each once, in the same order.
- **Initialiser failure**: without fail-fast, workers answer 503 and retry with back-off until the
  database appears; with `UWSGI_ES_FAIL_FAST=true` uWSGI exits with code 22 within seconds, in
  the default prefork mode as with lazy-apps, naming the problem, without a respawn storm.
- **Hostile input**: 10,000 property-based malformed requests per store (hypothesis, raw sockets):
  zero 5xx, zero worker deaths, and only accepted requests change the store.
- **Hostile clients** against the shipped inis: 64 clients dribbling bodies and 64 dribbling
  headers (1 byte/s) while `/health` and deposits are answered within 2 s, the slow bodies shed
  (408, or closed) at `UWSGI_ES_BODY_TIMEOUT`, or within 0.05 s once `UWSGI_ES_BODY_READERS` of a
  worker are receiving theirs; 1,000 such clients reconnecting as soon as they are shed, with
  `/health` still answering; declared bodies of
  1 GiB and 2^63 bytes answered 413 before a byte of them is sent; the documented header and URL
  limits; passwords in URLs reach no response and no log line, and 503 bodies to anonymous
  clients say one stable sentence.
- **Sick storage**: a lock held on the events table, or on SQLite's write lock, delays requests by
  at most the configured bound, then 503 "busy"; a SQLite file deleted under the server, made
  read-only, or on a full disk, and a read-only PostgreSQL: no write acknowledged that is not
  stored, `/ready` 503 meanwhile, service back without a restart.
- **Database waits that freeze workers** (tests/integration/test_database_waits.py, `uwsgi.ini`:
  gevent, 4 workers): 64 clients reading `/balances` with an `X-Min-Position` nobody wrote, again
  and again, while `/health` and deposits are sent: `/health` and every deposit answer, the reads
  answer 503 (over `UWSGI_ES_MAX_WAITING_READS` at once, the others after `UWSGI_ES_READ_WAIT`),
  never a 500, no harakiri. An outside session holds what appends need (PostgreSQL: the events
  table in SHARE mode; SQLite: its write lock) for 4 times the bound while 32 clients deposit:
  every answer within the bound from its arrival (plus a margin), `/health` answering meanwhile,
  and after the release the stored deposits are exactly the acknowledged ones.
- **Clean stop**: SIGINT and SIGTERM stop the instance within 5 s; each worker closes its
  application (engine disposed, Cassandra cluster shut down) and logs it.
- **Under granian, uvicorn and gunicorn's ASGI worker** (tests/integration/test_asgi_servers.py, 4
  workers, SQLite and PostgreSQL): 8 clients depositing while a worker is SIGKILLed every second
  for 5 s (each server replaces it; granian with `--respawn-failed-workers`): every acknowledged
  deposit stored once, versions contiguous. A graceful reload (SIGHUP) under 8 writers whose
  clients retry an unanswered deposit with its `Idempotency-Key`: every deposit acknowledged, each
  stored once, the retries counted. The hostile requests of the uWSGI suite: no 5xx, only
  accepted writes stored.

Hardening checked by the unit and store suites rather than a timed scenario: ids are plain UUIDs
(`1_1_…` is a 400); owner names refuse control and bidirectional-override characters; compressed
bodies get 415; an unencodable character in client input is escaped in the answer; stored topics
resolve only to the application's own (or registered) classes, never by importing; a corrupt row
is listed in the feed with an `error` naming why, its aggregate answers 503 "a stored event cannot
be read" and the log names its position; `GET /accounts/{id}/events` is paged; settings that
cannot be read (a port that is not a number, an unknown driver, a misspelt name) and a writers'
lock file that cannot be opened give a message naming the variable or the file, never a 500 or a
traceback (tests/unit/test_web.py, test_settings.py, test_secrets.py, test_domain.py,
tests/stores/test_sqlite.py, test_postgres.py).

"Failed" counts requests that got no 200 (connection errors during a kill or reload, 503 during
an outage). "Stored though failed" are deposits whose request failed in flight after the write
committed: allowed, never duplicated. "Lost" (acknowledged but not stored) and "duplicated" must
be 0, and are, but "lost" in the asynchronous-replication failover: a write the old primary
acknowledged before its standby received it is gone when the standby takes over (what asynchronous
replication means; the row counts it; synchronous replication loses none).
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
