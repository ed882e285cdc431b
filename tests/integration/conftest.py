"""Integration fixtures: each store's environment for a worker, and the reliability report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

VIA = "ES_TEST_VIA"  # names the proxy a scenario's database is reached through, in its report line


@pytest.fixture
def app_env(sqlite_url: str) -> dict[str, str]:
    """The environment a worker gets: the migrated SQLite database of this test."""
    return {"UWSGI_ES_DATABASE_URL": sqlite_url}


@pytest.fixture(params=["sqlite", "postgres", "cassandra"])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment for a fresh, migrated store of each backend (servers start on first use)."""
    if request.param == "cassandra":
        env: dict[str, str] = request.getfixturevalue("cassandra_env")
        return env
    return {"UWSGI_ES_DATABASE_URL": request.getfixturevalue(f"{request.param}_url")}


@pytest.fixture(params=["sqlite", "postgres", "cassandra", "postgres via PgBouncer"])
def fault_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """``backend_env``, and PostgreSQL through PgBouncer in transaction pooling: the stores the
    fault scenarios (killed workers, reloads) run against."""
    if request.param == "postgres via PgBouncer":
        return {"UWSGI_ES_DATABASE_URL": request.getfixturevalue("pgbouncer_url"), VIA: "PgBouncer"}
    if request.param == "cassandra":
        return dict(request.getfixturevalue("cassandra_env"))
    return {"UWSGI_ES_DATABASE_URL": request.getfixturevalue(f"{request.param}_url")}


@pytest.fixture(params=["sqlite", "postgres"])
def sql_backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """A fresh, migrated SQL store (Idempotency-Key needs one: see uwsgi_es.web.idempotency)."""
    return {"UWSGI_ES_DATABASE_URL": request.getfixturevalue(f"{request.param}_url")}


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str, dict[str, str], str], None]:
    """Print a reliability figure line, and collect it when RELIABILITY_REPORT names a file."""

    def record(scenario: str, env: dict[str, str], figures: str) -> None:
        store = env.get("UWSGI_ES_STORE") or env.get("UWSGI_ES_DATABASE_URL", "sqlite").split(":")[0]
        store = {"sqlite": "SQLite", "postgresql+psycopg": "PostgreSQL", "cassandra": "Cassandra"}.get(
            store, store
        )
        if VIA in env:
            store = f"{store} via {env[VIA]}"
        line = f"{scenario} | {store} | {figures}"
        print(line)
        target = os.environ.get("RELIABILITY_REPORT")
        if target:
            with open(target, "a") as out:
                out.write(
                    json.dumps(
                        {
                            "test": request.node.nodeid,
                            "scenario": scenario,
                            "store": store,
                            "figures": figures,
                        }
                    )
                    + "\n"
                )

    return record
