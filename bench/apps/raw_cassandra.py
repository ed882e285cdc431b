"""The Cassandra anchor: one prepared lightweight-transaction INSERT per deposit, one SELECT-and-SUM
per read, on the same node and settings as uwsgi_es's Cassandra store. A session per process,
created on first use (after the fork)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from bench.apps import respond

ROUTE = re.compile(r"^/accounts/([0-9a-f-]{36})(/deposits)?$")
_session: tuple[int, Session, Any, Any] | None = None


def connect(port: int) -> Session:
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc="datacenter1"))
    )
    cluster = Cluster(
        ["127.0.0.1"], port=port, protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile}
    )
    return cluster.connect()


def session() -> tuple[Session, Any, Any]:
    global _session
    if _session is None or _session[0] != os.getpid():
        created = connect(int(os.environ["UWSGI_ES_CASSANDRA_PORT"]))
        table = f"{os.environ['UWSGI_ES_CASSANDRA_KEYSPACE']}.raw_deposits"
        insert = created.prepare(
            f"INSERT INTO {table} (account_id, seq, amount) VALUES (?, ?, ?) IF NOT EXISTS"  # noqa: S608
        )
        select = created.prepare(f"SELECT amount FROM {table} WHERE account_id = ?")  # noqa: S608
        _session = (os.getpid(), created, insert, select)
    return _session[1], _session[2], _session[3]


def create_schema(port: int, keyspace: str) -> None:
    created = connect(port)
    created.execute(
        f"CREATE TABLE IF NOT EXISTS {keyspace}.raw_deposits "
        "(account_id uuid, seq timeuuid, amount bigint, PRIMARY KEY ((account_id), seq))"
    )
    created.cluster.shutdown()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/health":
        return respond(start_response, "200 OK", {"status": "ok"})
    match = ROUTE.match(path)
    if not match:
        return respond(start_response, "404 Not Found", {"error": "no route"})
    account = uuid.UUID(match.group(1))
    db, insert, select = session()
    if match.group(2) and environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        amount = json.loads(environ["wsgi.input"].read(length))["amount"]
        applied = db.execute(insert, (account, uuid.uuid1(), amount)).was_applied
        return respond(
            start_response, "200 OK" if applied else "409 Conflict", {"id": str(account), "amount": amount}
        )
    amounts = [row.amount for row in db.execute(select, (account,))]
    return respond(
        start_response, "200 OK", {"id": str(account), "balance": sum(amounts), "version": len(amounts) + 1}
    )
