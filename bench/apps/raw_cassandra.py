"""The Cassandra anchor: one prepared lightweight-transaction INSERT per deposit, one SELECT-and-SUM
per read, on the same node and settings as uwsgi_es's Cassandra store. A session per process,
created on first use (after the fork)."""

from __future__ import annotations

import os
import uuid
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from bench.apps import account_routes

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


def deposit(account: uuid.UUID, amount: int) -> tuple[str, Any]:
    db, insert, _ = session()
    applied = db.execute(insert, (account, uuid.uuid1(), amount)).was_applied
    return "200 OK" if applied else "409 Conflict", {"id": str(account), "amount": amount}


def read(account: uuid.UUID) -> Any:
    db, _, select = session()
    amounts = [row.amount for row in db.execute(select, (account,))]
    return {"id": str(account), "balance": sum(amounts), "version": len(amounts) + 1}


application = account_routes(deposit, read)
