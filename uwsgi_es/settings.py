"""Configuration: every ``UWSGI_ES_*`` variable declared once, parsed when an application is built.

Each setting is one field of ``Settings`` declared with ``setting(default, parser, help)``: its
name (``UWSGI_ES_`` + the field name), type, default, parser and help text live in that one place.
The README's table and ``deploy/uwsgi-es-settings.ini`` are rendered from it
(``uwsgi-es settings --markdown`` / ``--ini``), and a test fails when a committed copy differs.

Nothing reads the environment at import time: ``Settings.from_environ()`` is called when each
worker builds its application, so tests pass a plain dict and a worker sees the environment uWSGI
gave it. A bad value raises ``ConfigurationError`` naming the variable, the value (never a
password: URLs are shown redacted, or not at all) and what is accepted. Unknown ``UWSGI_ES_*``
names are refused too, because a misspelt variable that is silently ignored is the hardest
configuration bug to find.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal, get_args

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.redaction import parse_url, redact_url, scrub, secrets_of, why_unreadable

PREFIX = "UWSGI_ES_"
StoreKind = Literal["sqlalchemy", "cassandra", "django"]
LogFormat = Literal["text", "json"]
Reactor = Literal["libev", "asyncio"]
CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")
SERIAL_CONSISTENCY_LEVELS = ("SERIAL", "LOCAL_SERIAL")
DEFAULT_DATABASE_URL = "sqlite:///var/uwsgi_es.sqlite3"
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
LOOPBACK: Networks = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

Parser = Callable[[str, str], Any]


# Python's int() and float() also read other scripts' digits (U+0665, Arabic-Indic five, is 5),
# underscores and "1e3"; a setting is written in ASCII digits, so anything else is refused rather
# than guessed.
_WHOLE = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _integer(minimum: int, maximum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            if not _WHOLE.fullmatch(raw):
                raise ValueError(raw)
            value = int(raw)
        except ValueError:
            raise ConfigurationError(
                f"{name}={raw!r} is not a whole number: write it in ASCII digits (0-9)."
            ) from None
        if not minimum <= value <= maximum:
            raise ConfigurationError(f"{name}={value} is out of range: use {minimum} to {maximum}.")
        return value

    return parse


def _number(minimum: float, maximum: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        if not _DECIMAL.fullmatch(raw):
            raise ConfigurationError(
                f"{name}={raw!r} is not a number of seconds: write it in ASCII digits, with a point "
                "for a fraction (e.g. 2.5)."
            )
        value = float(raw)
        if not minimum <= value <= maximum:
            raise ConfigurationError(f"{name}={value} is out of range: use {minimum} to {maximum}.")
        return value

    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ConfigurationError):
    """Some settings are invalid. ``fallback`` holds the others, parsed, with defaults in place of
    the invalid ones: what a failed build still needs (fail-fast, gc-freeze, operator networks)
    comes from the same single parse, never from a second reading of the environment."""

    def __init__(self, message: str, fallback: Settings) -> None:
        super().__init__(message)
        self.fallback = fallback


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off.")


def _one_of(accepted: tuple[str, ...], what: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.upper() if accepted[0].isupper() else raw.lower()
        if value not in accepted:
            raise ConfigurationError(
                f"{name}={raw!r} is not a known {what}: use one of {', '.join(accepted)}."
            )
        return value

    return parse


def _hosts(name: str, raw: str) -> str:
    hosts = [host.strip() for host in raw.split(",")]
    if not all(hosts) or any(" " in host for host in hosts):
        raise ConfigurationError(f"{name}={raw!r} must be host names or addresses separated by commas.")
    return ",".join(hosts)


def _identifier(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", raw):
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid keyspace name: a letter, then letters, digits or _ (48 at most)."
        )
    return raw


def replication_map(name: str, raw: str) -> dict[str, str]:
    """A keyspace's replication as CQL wants it ({'class': 'SimpleStrategy', ...}), or the error
    naming ``name``, the variable it was read from."""
    strategy, _, spec = raw.partition(":")
    if strategy == "SimpleStrategy" and spec.isascii() and spec.isdigit() and int(spec) > 0:
        return {"class": "SimpleStrategy", "replication_factor": spec}
    if strategy == "NetworkTopologyStrategy" and spec:
        pairs = [pair.partition("=") for pair in spec.split(",")]
        if all(dc and sep and factor.isascii() and factor.isdigit() for dc, sep, factor in pairs):
            return {"class": "NetworkTopologyStrategy", **{dc: factor for dc, _, factor in pairs}}
    raise ConfigurationError(
        f"{name}={raw!r} is not a replication: use 'SimpleStrategy:<factor>' (one data centre) or "
        "'NetworkTopologyStrategy:<dc>=<factor>,<dc>=<factor>'."
    )


def _checked_replication(name: str, raw: str) -> str:
    replication_map(name, raw)
    return raw


# SQLAlchemy gives a URL that names no driver its dialect's default one: psycopg2 for PostgreSQL,
# which uwsgi_es does not install (its `postgres` extra installs psycopg 3), and `postgres://`
# (Heroku's and libpq's spelling) it does not read at all.
POSTGRES_DRIVER = "postgresql+psycopg"
_POSTGRES_WITHOUT_DRIVER = frozenset({"postgresql", "postgres"})
POSTGRES_EXAMPLE = "postgresql+psycopg://user:password@host:5432/dbname"
SQLITE_FORMS = (
    "sqlite:///relative/path.sqlite3 (three slashes: a path relative to uWSGI's chdir) or "
    "sqlite:////absolute/path.sqlite3 (four: an absolute path); sqlite:// alone is a database in memory"
)


def with_driver(raw: str) -> str:
    """The URL as uwsgi_es reads it: ``postgresql://`` and ``postgres://``, which name no driver,
    mean ``postgresql+psycopg://``. Any other URL, one naming its driver included, as written."""
    scheme, separator, rest = raw.partition("://")
    if separator and scheme.lower() in _POSTGRES_WITHOUT_DRIVER:
        return f"{POSTGRES_DRIVER}://{rest}"
    return raw


def _directory(name: str, raw: str) -> str:
    """A directory's path, or empty."""
    text = raw.strip()
    if "\x00" in text:
        raise ConfigurationError(f"{name} holds a NUL byte: give a directory's path, or leave it empty.")
    return text


def _listen_url(name: str, raw: str) -> str:
    """A PostgreSQL URL (``parse_database_url``), or empty: LISTEN on ``UWSGI_ES_DATABASE_URL``."""
    if not raw.strip():
        return ""
    url = parse_database_url(name, raw)
    if make_url(url).get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"{name}={redact_url(url)!r} is not a PostgreSQL URL: only PostgreSQL's read side listens, "
            f"on a direct connection to the server (e.g. '{POSTGRES_EXAMPLE}'), or leave it empty."
        )
    return url


def parse_database_url(name: str, raw: str) -> str:
    """``raw`` as uwsgi_es reads it (``with_driver``), checked: a URL SQLAlchemy can read, for a
    backend we support, in a shape its dialect accepts, with its driver's module installed. The
    parser of UWSGI_ES_DATABASE_URL, and the engine's check of a ``Settings`` made in code. Never
    quoted whole in an error: only ``redact_url``'s version of it, which hides every password."""
    raw = with_driver(raw.strip())
    url = parse_url(raw)
    if url is None:
        sqlite = raw.lower().startswith("sqlite")
        reason = why_unreadable(raw) if raw else "it is empty"
        raise ConfigurationError(
            f"{name} cannot be read as a database URL: {reason} (the value is not shown, as it may "
            "hold a password). Expected "
            + (SQLITE_FORMS if sqlite else f"e.g. 'sqlite:///var/app.sqlite3' or '{POSTGRES_EXAMPLE}'")
            + "."
        )
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        spelling = (
            f" SQLAlchemy spells it postgresql: {url.drivername.replace('postgres', 'postgresql', 1)}://..."
            if backend == "postgres"
            else ""
        )
        raise ConfigurationError(
            f"{name} names the {backend!r} backend ({redact_url(url)}); uwsgi_es supports "
            f"sqlite and postgresql.{spelling}"
        )
    if backend == "sqlite" and (url.host or url.port or url.username or url.password is not None):
        raise ConfigurationError(_sqlite_with_a_host(name, raw, url))
    try:
        url.get_dialect().import_dbapi()  # imports the driver's module only: no connection
    except NoSuchModuleError:
        raise ConfigurationError(
            f"{name} names the driver {url.drivername!r}, which SQLAlchemy does not know "
            f"({redact_url(url)}); use e.g. {POSTGRES_DRIVER} or sqlite."
        ) from None
    except ImportError as exc:
        raise ConfigurationError(missing_driver(name, url, exc)) from None
    return raw


def _sqlite_with_a_host(name: str, raw: str, url: URL) -> str:
    """sqlite://relative/path: two slashes make a host of what follows, and SQLite has none."""
    scheme, _, rest = raw.partition("://")
    found = f"the host {url.host!r}" if url.host else "a user, password or port"
    corrected = (
        f" This one is probably '{scheme}:///{rest}' (or '{scheme}:////{rest}' if the path is absolute)."
        if url.host and url.username is None and url.port is None
        else ""
    )
    return (
        f"{name}={redact_url(url)!r} is not a SQLite URL: after 'sqlite://' it has {found}, and a "
        f"SQLite database has none. Use {SQLITE_FORMS}.{corrected}"
    )


def missing_driver(name: str, url: URL, exc: ImportError) -> str:
    """Why the driver ``url`` names cannot be used, naming its missing module, and the fix."""
    if exc.name:
        problem = f"whose module {exc.name!r} is not installed"
    else:  # the module is there but fails to load (psycopg without libpq): say how
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        problem = f"which cannot be imported ({scrub(first, secrets_of(url.render_as_string(False)))})"
    where = f"{name} names the {url.drivername!r} driver ({redact_url(url)}), {problem}."
    if url.get_backend_name() != "postgresql":
        return f"{where} Install it, or use the driver Python ships: sqlite:///var/app.sqlite3."
    if url.drivername == POSTGRES_DRIVER:
        return f"{where} It is psycopg 3, which uwsgi_es's extra installs: pip install 'uwsgi_es[postgres]'."
    return (
        f"{where} The uwsgi_es[postgres] extra installs psycopg 3, whose form is '{POSTGRES_EXAMPLE}' "
        f"(postgresql:// naming no driver is read so too): pip install 'uwsgi_es[postgres]' and use "
        f"that form, or install {exc.name or 'the module'} yourself to keep {url.drivername}."
    )


def _networks(name: str, raw: str) -> Networks:
    if raw.lower() in ("none", "-"):
        return ()
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"{name}={raw!r} is not a list of networks ({exc}): use e.g. '127.0.0.0/8,::1,10.0.0.0/24', "
            "or 'none' to show process details to nobody."
        ) from None


def _import_string(name: str, raw: str) -> str:
    module, _, attribute = raw.partition(":")
    if not module or not attribute:
        raise ConfigurationError(f'{name}={raw!r} must be in the form "package.module:ApplicationClass".')
    return raw


def _projection_list(name: str, raw: str) -> str:
    """Comma-separated ``module:Name`` or ``module:Name=module:View`` (checked for form only: the
    classes are imported where the projections run)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    for item in items:
        for part in item.split("="):
            module, _, attribute = part.strip().partition(":")
            if item.count("=") > 1 or not module or not attribute:
                raise ConfigurationError(
                    f"{name}={raw!r}: {item!r} is neither module:Name (an EventSourcedProjection) nor "
                    "module:Name=module:View (a Projection and its view's TrackingRecorder class)."
                )
    return ",".join(items)


def setting(default: Any, parser: Parser, help: str, *, shown: str | None = None) -> Any:
    """Declare one setting: its default, how its text is parsed and checked, and what it is for.
    ``shown``: the default as a user would write it, when ``str(default)`` is not that."""
    metadata = {"parser": parser, "help": help, "shown": str(default) if shown is None else shown}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Everything an application needs to start, already validated.

    Field ``x`` is read from ``UWSGI_ES_X``; the defaults suit the SQLite quick start.
    """

    store: StoreKind = setting(
        "sqlalchemy",
        _one_of(get_args(StoreKind), "store"),
        "the record store: `sqlalchemy`, `cassandra` or `django`",
    )
    database_url: str = setting(
        DEFAULT_DATABASE_URL,
        parse_database_url,
        "SQLAlchemy URL (SQLite or PostgreSQL); relative SQLite paths are from uWSGI's `chdir`. "
        "Shown only with its passwords masked",
    )
    application: str = setting(
        "",
        _import_string,
        "`module:Class` (or `module:function` taking the settings) built in each process; required "
        "unless your code passes a factory (`uwsgi_es.install(Carts)`). The example: "
        "`uwsgi_es.example.domain:BankAccounts`",
        shown="(none)",
    )
    sqlite_busy_timeout_ms: int = setting(
        5000,
        _integer(0, 600_000),
        "the longest a SQLite writer waits for the write lock (the other writers' queue, then SQLite's "
        "own lock), then 503",
    )
    lock_timeout: float = setting(
        5.0,
        _number(0.05, 3600.0),
        "PostgreSQL: seconds a statement waits for a lock (`lock_timeout`), e.g. behind a `CREATE INDEX`, "
        "then 503",
    )
    idempotency_ttl: float = setting(
        86_400.0,
        _number(60.0, 90 * 86_400.0),
        "seconds the answer of a request sent with an `Idempotency-Key` is kept for its repeats",
    )
    statement_timeout: float = setting(
        30.0,
        _number(0.0, 86_400.0),
        "PostgreSQL: seconds one statement may run (`statement_timeout`; 0: no limit; `uwsgi-es "
        "migrate` runs without it)",
    )
    idle_in_transaction_timeout: float = setting(
        60.0,
        _number(0.0, 86_400.0),
        "PostgreSQL: seconds a session may sit idle inside a transaction before the server ends it "
        "and its locks (`idle_in_transaction_session_timeout`; 0: no limit)",
    )
    pool_size: int = setting(5, _integer(1, 1000), "server databases: pooled connections per worker")
    max_overflow: int = setting(10, _integer(0, 1000), "server databases: extra connections per worker")
    asgi_threads: int = setting(
        8,
        _integer(1, 1000),
        "ASGI servers (uvicorn, granian, gunicorn's ASGI worker): the threads of a worker that run "
        "requests (the commands are synchronous); at most the pool's size plus its overflow",
    )
    pool_timeout: float = setting(
        10.0, _number(0.1, 600.0), "seconds to wait for a pooled connection, then 503"
    )
    pool_recycle: int = setting(1800, _integer(-1, 86_400), "seconds before a connection is replaced")
    pool_pre_ping: bool = setting(
        False,
        _boolean,
        "test a pooled connection before every use (one round trip each); without it, a call whose "
        "connection the server dropped is run once more on a new one, unless it reached COMMIT",
        shown="false",
    )
    connect_timeout: int = setting(5, _integer(1, 600), "seconds to wait for a new database connection")
    snapshot_interval: int = setting(
        100,
        _integer(0, 1_000_000),
        "an aggregate is snapshotted every this many events (0: never); a class's own "
        "`snapshot_interval` wins; `uwsgi-es migrate` creates the table",
    )
    aggregate_cache: int = setting(
        1000,
        _integer(0, 10_000_000),
        "aggregates each worker keeps in memory (LRU), read forward from their cached version; 0: none",
    )
    conflict_retries: int = setting(
        10, _integer(0, 100), "times a conflicting command is reloaded and re-run before 409"
    )
    max_body_bytes: int = setting(
        65536, _integer(64, 64 * 1024 * 1024), "larger request bodies get 413, refused before they are read"
    )
    body_timeout: float = setting(
        10.0,
        _number(0.1, 3600.0),
        "seconds a request body may take to arrive, whole; then 408 and the connection is closed "
        "(under uwsgi.ini's gevent mode; elsewhere each read is bounded by uWSGI's socket-timeout)",
    )
    body_readers: int = setting(
        16,
        _integer(1, 10_000),
        "requests of one worker that may take up to UWSGI_ES_BODY_TIMEOUT to receive their body; past "
        "them a request's body must arrive within 0.05 s (sent with its headers), so slow senders never "
        "hold a worker's other requests",
    )
    operator_networks: Networks = setting(
        LOOPBACK,
        _networks,
        "clients shown process details (`/worker`, pids): comma-separated networks, or `none`",
        shown="127.0.0.0/8,::1",
    )
    log_format: LogFormat = setting(
        "text",
        _one_of(get_args(LogFormat), "log format"),
        "`json`: every uwsgi_es log line is one JSON object (time, level, logger, pid, worker, "
        "request_id, the event's fields or the message); `text`: key=value lines",
    )
    slow_request_ms: int = setting(
        1000, _integer(0, 3_600_000), "a request slower than this is logged (event=slow_request); 0: never"
    )
    metrics_sharedarea: int = setting(
        0,
        _integer(0, 255),
        "the uWSGI sharedarea (its id) where every worker and mule keeps its numbers for `/metrics`; "
        "the ini needs `sharedarea = PAGES`, 16 pages (64 KiB) per worker and mule, plus 16",
    )
    metrics_dir: str = setting(
        "",
        _directory,
        "servers without uWSGI's sharedarea (uvicorn, granian, gunicorn): a directory every worker "
        "may write, where each process keeps its numbers for `/metrics` in a file of its own (a dead "
        "worker's stay counted); empty: `/metrics` answers only under a single-process server",
        shown="(none)",
    )
    init_retry_seconds: float = setting(1.0, _number(0.01, 3600.0), "first back-off after a failed build")
    init_retry_max_seconds: float = setting(30.0, _number(0.01, 3600.0), "longest back-off between builds")
    fail_fast: bool = setting(
        False,
        _boolean,
        "stop uWSGI when a worker cannot build, instead of answering 503 and retrying",
        shown="false",
    )
    gc_freeze: bool = setting(
        True,
        _boolean,
        "`gc.freeze()` first thing after the fork, so the garbage collector never copies the pages a "
        "worker shares with the master (about 8 MB per worker for the example API)",
        shown="true",
    )
    readside_poll_interval: float = setting(
        0.1,
        _number(0.01, 600.0),
        "read side: how often an idle projection runner reads the feed on PostgreSQL (appends do "
        "not notify; a read waiting for its own write does), and the longest it waits for SQLite's "
        "data_version to change: how stale a projection may be for readers that do not wait",
    )
    listen_url: str = setting(
        "",
        _listen_url,
        "read side, PostgreSQL behind a transaction pooler (PgBouncer): a URL reaching the server "
        "directly, on which each projection runner LISTENs for wake-ups (one connection per mule); "
        "empty: LISTEN on the database URL, or, through a pooler (which cannot carry a LISTEN), "
        "poll every `UWSGI_ES_READSIDE_POLL_INTERVAL`. Shown only with its passwords masked",
    )
    projections: str = setting(
        "",
        _projection_list,
        "read side of an eventsourcing library application: the library's projections its runner "
        "mules run, one per `mule = %b-es-mule.py` line, in order: comma-separated `module:Name` (an "
        "EventSourcedProjection) or `module:Name=module:View` (a Projection and its view's "
        "TrackingRecorder class); uwsgi_es's own applications declare theirs in `projections`",
        shown="(none)",
    )
    readside_batch: int = setting(
        500,
        _integer(1, 100_000),
        "read side: the most events a projection applies per transaction (a runner catching up "
        "takes this many at a time; on SQLite writers wait for such a transaction to commit)",
    )
    read_wait: float = setting(
        2.0,
        _number(0.0, 60.0),
        "read side: how long a read asking for a position (`X-Min-Position`) waits for its projection "
        "to reach it, then 503 naming the lag",
    )
    max_waiting_reads: int = setting(
        16,
        _integer(0, 100_000),
        "read side: reads one worker lets wait at once for their `X-Min-Position` (each holds one of "
        "the worker's 64 gevent slots, and no database connection); more are answered 503 at once, "
        "naming this bound",
    )
    cassandra_hosts: str = setting("127.0.0.1", _hosts, "contact points, comma-separated")
    cassandra_port: int = setting(9042, _integer(1, 65535), "native protocol port")
    cassandra_keyspace: str = setting("uwsgi_es", _identifier, "keyspace of the tables")
    cassandra_replication: str = setting(
        "SimpleStrategy:1",
        _checked_replication,
        "or `NetworkTopologyStrategy:dc1=3,dc2=3` (used by migrate)",
    )
    cassandra_local_dc: str = setting(
        "datacenter1", lambda name, raw: raw, "the DC-aware load-balancing policy's local data centre"
    )
    cassandra_consistency: str = setting(
        "LOCAL_QUORUM", _one_of(CONSISTENCY_LEVELS, "consistency level"), "reads and the commit of writes"
    )
    cassandra_serial_consistency: str = setting(
        "LOCAL_SERIAL",
        _one_of(SERIAL_CONSISTENCY_LEVELS, "serial consistency level"),
        "the Paxos phase of lightweight transactions",
    )
    cassandra_protocol_version: int = setting(5, _integer(3, 5), "explicit, so the driver never downgrades")
    cassandra_request_timeout: float = setting(10.0, _number(0.1, 600.0), "seconds per request")
    cassandra_speculative_delay: float = setting(
        0.5,
        _number(0.0, 600.0),
        "seconds before a read, or the repeat of a write that got no answer, is also sent to "
        "another replica (0: never)",
    )
    cassandra_reactor: Reactor = setting("libev", _one_of(get_args(Reactor), "reactor"), "or `asyncio`")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``UWSGI_ES_*`` variable of ``environ`` (default: os.environ).

        Raises ``SettingsError`` naming the first problem (and how many more there are), with the
        valid settings as its ``fallback``.
        """
        env = os.environ if environ is None else environ
        problems: list[str] = []
        known = {variable for variable, *_ in declared()}
        for name in sorted(env):
            if name.startswith(PREFIX) and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" Did you mean {close[0]}?" if close else ""
                problems.append(f"Unknown setting {name}.{hint} Known settings: {', '.join(sorted(known))}.")
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[f.name] = f.metadata["parser"](name, raw.strip())
            except ConfigurationError as exc:
                problems.append(str(exc))
        problem = _relations(values)
        if problem:
            problems.append(problem)
            values.pop("init_retry_max_seconds", None)
        settings = cls(**values)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s) in the settings)" if len(problems) > 1 else ""
            raise SettingsError(problems[0] + more, settings)
        return settings

    @property
    def is_sqlite(self) -> bool:
        return self.store == "sqlalchemy" and make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def is_sqlite_memory(self) -> bool:
        url = make_url(self.database_url)
        return self.is_sqlite and url.database in (None, "", ":memory:")

    def describe_store(self) -> str:
        """The store and database, with any password hidden: safe for logs and error messages."""
        if self.store == "django":
            return "django store on the project's default database"
        if self.store == "cassandra":
            return (
                f"cassandra store at {self.cassandra_hosts}:{self.cassandra_port}/{self.cassandra_keyspace}"
            )
        return f"{self.store} store at {redact_url(self.database_url)}"


# Read by uwsgi.ini and the test harness, not by Python code: (variable, default, help).
LAUNCH_SETTINGS = (
    (
        "UWSGI_ES_HTTP",
        "127.0.0.1:8080",
        "listen address, read by `uwsgi.ini` (the test harness sets it)",
    ),
)


def declared() -> Iterator[tuple[str, str, str]]:
    """(variable, default as written, help) of every setting, in declaration order."""
    for f in fields(Settings):
        yield PREFIX + f.name.upper(), str(f.metadata["shown"]), str(f.metadata["help"])
    yield from LAUNCH_SETTINGS


def render_markdown() -> str:
    """The README's settings table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | `{default}` | {help} |" for name, default, help in declared()]
    return "\n".join(rows) + "\n"


def render_ini() -> str:
    """deploy/uwsgi-es-settings.ini: every variable declared as an (empty) uWSGI option."""
    lines = [
        "; Generated by `uwsgi-es settings --ini` from uwsgi_es/settings.py: do not edit by hand.",
        ";",
        "; uWSGI reads every UWSGI_* environment variable as one of its own options. Under `strict = true`",
        "; it would refuse our UWSGI_ES_* settings as unknown options; including this file declares each",
        "; as an empty custom option, which uWSGI accepts and ignores (uwsgi_es reads them itself).",
        "[uwsgi]",
    ]
    lines += [f"declare-option = {uwsgi_option_name(name)}=" for name, _, _ in declared()]
    return "\n".join(lines) + "\n"


def uwsgi_option_name(variable: str) -> str:
    """The uWSGI option an environment variable becomes: UWSGI_ES_POOL_SIZE -> es-pool-size."""
    return variable.removeprefix("UWSGI_").lower().replace("_", "-")


def _relations(values: Mapping[str, Any]) -> str:
    """What is wrong between settings (each valid on its own), or ""."""
    first = values.get("init_retry_seconds", Settings.init_retry_seconds)
    ceiling = values.get("init_retry_max_seconds", Settings.init_retry_max_seconds)
    if ceiling < first:
        return (
            f"UWSGI_ES_INIT_RETRY_MAX_SECONDS ({ceiling}) is smaller than "
            f"UWSGI_ES_INIT_RETRY_SECONDS ({first}); make it at least as large."
        )
    return ""


def resolve(settings: Settings | None = None) -> tuple[Settings, ConfigurationError | None]:
    """The settings of one build, parsed once: (settings, None), or (the valid ones, the problem)."""
    if settings is not None:
        return settings, None
    try:
        return Settings.from_environ(), None
    except SettingsError as exc:
        return exc.fallback, exc


def setting_field(name: str) -> Field[Any]:
    """The declaration of one setting, by field name."""
    return next(f for f in fields(Settings) if f.name == name)
