"""Whether the instance's database pools fit the PostgreSQL server: at most processes x (pool size
+ overflow) connections, against ``max_connections`` less the superusers' reserve and what other
clients hold now. Checked from the doctor's own process, after the instance has stopped."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from uwsgi_es.doctor.observed import Finding, Observed
from uwsgi_es.errors import ConfigurationError
from uwsgi_es.redaction import redact_url
from uwsgi_es.runtime.process import runs_projections
from uwsgi_es.settings import Settings

# A projection runner holds one connection, and a second while a reader wakes it.
CONNECTIONS_PER_MULE = 2


@dataclass(frozen=True)
class Pool:
    url: URL
    size: int
    overflow: int
    owner: str  # whose settings these are, for the message


def pool_of(seen: Observed) -> Pool | None:
    """The PostgreSQL pool each process opens, from the instance's environment; None without one."""
    env = seen.environment
    if env.get("PERSISTENCE_MODULE", "").endswith("postgres"):  # an eventsourcing library application
        url = URL.create(
            "postgresql+psycopg",
            username=env.get("POSTGRES_USER"),
            password=env.get("POSTGRES_PASSWORD"),
            host=env.get("POSTGRES_HOST", "localhost"),
            port=int(env.get("POSTGRES_PORT", "5432")),
            database=env.get("POSTGRES_DBNAME"),
        )
        size, overflow = int(env.get("POSTGRES_POOL_SIZE", "5")), int(env.get("POSTGRES_MAX_OVERFLOW", "10"))
        return Pool(url, size, overflow, "POSTGRES_POOL_SIZE + POSTGRES_MAX_OVERFLOW")
    settings = Settings.from_environ(env)
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return Pool(url, settings.pool_size, settings.max_overflow, "UWSGI_ES_POOL_SIZE + UWSGI_ES_MAX_OVERFLOW")


def concurrency(seen: Observed) -> int:
    """Requests one worker serves at once: its threads, or its async cores (gevent = 64)."""
    cores = [seen.first(name) for name in ("threads", "gevent", "async")]
    return max([int(c) for c in cores if c is not None and c.isdigit()] + [1])


def connection_budget(seen: Observed) -> Iterator[Finding]:
    try:
        pool = pool_of(seen)
    except ConfigurationError as exc:
        yield Finding(True, "the UWSGI_ES_* settings are invalid", str(exc), "fix the variable named")
        return
    if pool is None:
        return
    per_worker = min(pool.size + pool.overflow, concurrency(seen))
    mules = sum(1 for mule in seen.options.get("mule", []) if runs_projections(str(mule)))
    demand = seen.processes * per_worker + mules * min(pool.size + pool.overflow, CONNECTIONS_PER_MULE)
    where = redact_url(pool.url)
    try:
        maximum, reserved, in_use, pooled = _server_limits(pool.url)
    except Exception as exc:
        yield Finding(
            True,
            "PostgreSQL did not answer the doctor",
            f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "check the URL and that the server is up: the workers could not connect either",
        )
        return
    if pooled:
        yield Finding(
            False,
            f"PostgreSQL is reached through a connection pooler (PgBouncer): {demand} client connections",
            f"{where} hands out server connections per transaction, so the server's max_connections "
            f"({maximum}) bounds the pooler's pools, not these: {demand} client connections at most "
            f"({seen.processes} workers x {per_worker}"
            + (f", {mules} projection mule(s)" if mules else "")
            + ")",
            f"keep PgBouncer's max_client_conn at {demand} or more for this instance, and its "
            "default_pool_size within max_connections (deploy/pgbouncer.ini)",
        )
        return
    available = maximum - reserved - in_use
    sum_text = (
        f"{seen.processes} workers x {per_worker} (min of {pool.owner} = {pool.size + pool.overflow} and "
        f"{concurrency(seen)} requests at once)"
        + (
            f" + {mules} projection mule(s) x {min(pool.size + pool.overflow, CONNECTIONS_PER_MULE)}"
            if mules
            else ""
        )
        + f" = {demand}, against {available} free at {where} (max_connections {maximum}, "
        f"{reserved} reserved for superusers, {in_use} held by other clients now)"
    )
    if demand > available:
        yield Finding(
            True,
            f"the pools can open {demand} PostgreSQL connections, the server has {available} free",
            sum_text + ": under load the last workers get 'too many clients' errors",
            f"lower {pool.owner} or processes, raise max_connections, or put PgBouncer in front",
        )
    else:
        yield Finding(False, f"PostgreSQL connections fit: {demand} of {available}", sum_text)


def _server_limits(url: URL) -> tuple[int, int, int, bool]:
    """max_connections, the superusers' reserve, other clients now, and whether a pooler answers
    (the backend key it gave names no process of the server: see the SQL store's engine)."""
    engine = create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": 5, "prepare_threshold": None}
    )
    try:
        with engine.connect() as connection:
            backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            driver = connection.connection.driver_connection
            pooled = driver is not None and backend != driver.info.backend_pid
            maximum = int(connection.execute(text("SHOW max_connections")).scalar_one())
            reserved = int(connection.execute(text("SHOW superuser_reserved_connections")).scalar_one())
            in_use = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        return maximum, reserved, int(in_use), pooled
    finally:
        engine.dispose()
