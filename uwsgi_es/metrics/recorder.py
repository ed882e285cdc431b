"""What uwsgi_es counts, and where this process keeps it.

Under uWSGI every worker and mule counts into its own slot of a uWSGI sharedarea (created by the
master from the ini's ``sharedarea = PAGES``, so it exists in every mode, lazy-apps included):
worker ``w`` in slot ``w``, mule ``m`` in slot ``processes + m``. ``/metrics``, served by any
worker, sums the slots: numbers for the whole instance, kept across a worker's death and respawn.
Under another server (uvicorn, granian, gunicorn) with ``UWSGI_ES_METRICS_DIR`` set, each process
counts into a slot of its own in a memory-mapped file there, and ``/metrics`` sums the files of its
server (``files``). Anywhere else (the master, a spooler, a test) a process counts into a private
table, which is the whole truth only where no other process serves the same application:
``/metrics`` answers there only when the server says so (``wsgi.multiprocess`` false, PEP 3333: a
plain single-process server, gunicorn with one worker), and 503 under any server that runs
several (``problem()`` says why).

Recording never raises and never touches a database; a request costs three additions under one
process-local lock (about 1 µs).

A slot holds 511 numbers, and a request series takes 16 (a counter per status, 14 latency buckets
and a sum per method and route), so no client may choose labels: routes are the application's
patterns (any other path is ``unmatched``), a method outside the usual seven is ``other`` and HEAD
counts as GET (it runs GET's handler), a status the API does not answer is its class (``4xx``).
And whatever the application's routes add up to, the last ``RESERVED`` entries of a slot are kept
for answers the server chose, 5xx: once a slot is that full, a request whose 2xx-4xx series is new
is counted under method ``other``, route ``unmatched`` and its status class, so an outage's 503
series always find room.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field

from uwsgi_es.metrics import files
from uwsgi_es.metrics.table import SLOT_BYTES, SlotTable
from uwsgi_es.runtime import process

SEPARATOR = "\x1f"  # between a key's family and its label values (never in a label we write)

# Families: the key's first part -> (Prometheus name, kind, label names, help).
REQUESTS = "requests"
DURATION = "duration"
DURATION_SUM = "duration_sum"
COMMANDS = "commands"
CONFLICTS = "conflicts"
RETRIES = "retries"
EVENTS_STORED = "events_stored"
BUILDS = "builds"
POOL_CHECKOUTS = "pool_checkouts"
PROJECTED = "projected"


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # counter | histogram
    labels: tuple[str, ...]
    help: str


FAMILIES = {
    REQUESTS: Family(
        "uwsgi_es_requests",
        "counter",
        ("method", "route", "status"),
        "Requests answered, by route and status.",
    ),
    DURATION: Family(
        "uwsgi_es_request_duration_seconds",
        "histogram",
        ("method", "route"),
        "Time from a request's arrival in the application to its complete response.",
    ),
    COMMANDS: Family("uwsgi_es_commands", "counter", ("outcome",), "Commands run, by outcome."),
    CONFLICTS: Family(
        "uwsgi_es_conflicts", "counter", (), "Appends refused because another writer got there first."
    ),
    RETRIES: Family("uwsgi_es_conflict_retries", "counter", (), "Commands run again after a conflict."),
    EVENTS_STORED: Family("uwsgi_es_events_stored", "counter", (), "Events stored."),
    BUILDS: Family(
        "uwsgi_es_builds", "counter", ("outcome",), "Post-fork application builds, by outcome (ok, failed)."
    ),
    POOL_CHECKOUTS: Family(
        "uwsgi_es_pool_checkouts", "counter", (), "Database connections checked out of a pool."
    ),
    PROJECTED: Family(
        "uwsgi_es_projected_events", "counter", ("projection",), "Events applied by a projection runner."
    ),
}
# Upper bounds of the latency buckets, in seconds (+Inf after the last).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Methods named in labels; any other is "other" (a client chooses the method: labels stay few).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Statuses named in labels (what uwsgi_es and a JSON API answer); any other is its class, "4xx".
STATUSES = frozenset(
    {200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 410, 411, 413, 415, 422, 429}
    | {500, 501, 502, 503, 504}
)
UNMATCHED_ROUTE = "unmatched"  # uwsgi_es.web.http.UNMATCHED: the route of a path no pattern matches
RESERVED = 64  # entries kept for new 5xx series: a 503 on 60 routes seen before (one entry each)


class MetricsUnavailableError(Exception):
    """Under uWSGI without the shared area: the numbers of one worker would pass for everyone's."""


@dataclass
class _Attached:
    pid: int
    table: SlotTable
    problem: str | None  # why the numbers are this process's only, under uWSGI
    # (method, route, status) -> where its counter, its latency buckets and its sum are.
    requests: dict[tuple[str, str, int], tuple[int, tuple[int, ...], int]] = field(default_factory=dict)


_attached: _Attached | None = None
_sharedarea = 0
_directory = ""


def configure(sharedarea: int, directory: str = "") -> None:
    """Use sharedarea ``sharedarea`` (``UWSGI_ES_METRICS_SHAREDAREA``) under uWSGI, the files of
    ``directory`` (``UWSGI_ES_METRICS_DIR``) elsewhere; called by each build."""
    global _sharedarea, _directory, _attached
    if (sharedarea, directory) != (_sharedarea, _directory):
        _sharedarea, _directory, _attached = sharedarea, directory, None


def totals() -> tuple[dict[str, float], float]:
    """What every process of this instance counted, summed, and the numbers they could not keep."""
    if not process.in_uwsgi() and _directory:
        _here()  # this process's file exists before the sum is read
        return files.server_totals(_directory)
    here = table()
    return here.totals(), here.dropped()


def table() -> SlotTable:
    """This process's table, attached on first use in each process (a fork gets its own)."""
    return _here().table


def _here() -> _Attached:
    attached = _attached
    if attached is None or attached.pid != os.getpid():
        attached = _attach()
    return attached


def problem(*, multiprocess: bool) -> str | None:
    """Why ``/metrics`` cannot speak for the whole instance here; None when it can.

    ``multiprocess``: the request's ``wsgi.multiprocess`` (true when the server may run this
    application in other processes at the same time; a server that does not say counts as true).
    Under uWSGI the sharedarea decides; elsewhere each process counts alone, so the numbers are
    the instance's only where the server runs one process."""
    here = _here()
    if process.in_uwsgi() or not multiprocess or _directory:
        return here.problem
    return (
        "/metrics must add up the numbers of every process, and this server runs the application "
        "in several processes (wsgi.multiprocess is true): each counts on its own, so an answer "
        "would be one process's numbers passed off as the whole instance's. Set UWSGI_ES_METRICS_DIR "
        "to a directory every worker may write (uvicorn, granian, gunicorn: one file per process, "
        "summed by /metrics), or serve it under uWSGI with `sharedarea = 160` in the [uwsgi] section "
        "(as uwsgi.ini does: 16 pages per worker and mule, plus 16)"
    )


def _attach() -> _Attached:
    global _attached
    _attached = _Attached(os.getpid(), *_shared_table())
    return _attached


def _shared_table() -> tuple[SlotTable, str | None]:
    uwsgi = process.uwsgi
    if uwsgi is None:
        return (files.own_table(_directory) if _directory else _private()), None
    workers, mule = process.process_count(), process.mule_id()
    slot = process.worker_id() or (workers + mule if mule else 0)
    share = getattr(uwsgi, "sharedarea_memoryview", None)
    try:
        area = share(_sharedarea) if share is not None else None
    except (ValueError, TypeError, OSError):
        area = None
    pages = (workers + len(process.options("mule")) + 1) * SLOT_BYTES // 4096
    if area is None:
        return _private(), (
            f"/metrics needs uWSGI's sharedarea {_sharedarea} to add up every worker and mule: add "
            f"`sharedarea = {pages}` to the [uwsgi] section (16 pages per worker and mule, plus 16), "
            "or set UWSGI_ES_METRICS_SHAREDAREA to the id of one that is free"
        )
    slots = len(area) // SLOT_BYTES
    if slot == 0 or slot >= slots:
        # The master and other processes never count into the shared area; a slot past its end
        # means the area is too small for this many workers and mules.
        too_small = (
            None
            if slot == 0
            else (
                f"uWSGI's sharedarea {_sharedarea} has room for {slots - 1} workers and mules; "
                f"this is {process.role()}: set `sharedarea = {pages}` or more"
            )
        )
        return _private(), too_small
    return SlotTable(area, slot, slots), None


def _private() -> SlotTable:
    return SlotTable(memoryview(bytearray(SLOT_BYTES)), 0, 1)


def key(family: str, *labels: object) -> str:
    return SEPARATOR.join([family, *map(str, labels)])


def request_served(method: str, route: str, status: int, seconds: float) -> None:
    """One answered request: its counter, its latency bucket and the latency sum."""
    here = _here()
    where = here.requests.get((method, route, status))
    if where is None:
        where = _request_numbers(here, method, route, status)
    counter, buckets, total = where
    values = here.table.values
    with here.table.lock:
        values[counter] += 1.0
        values[buckets[bisect.bisect_left(BUCKETS, seconds)]] += 1.0
        values[total] += seconds


def _request_numbers(
    here: _Attached, method: str, route: str, status: int
) -> tuple[int, tuple[int, ...], int]:
    if len(here.requests) > 10_000:  # bounded even if a caller lets clients choose routes
        here.requests.clear()
    table, asked = here.table, (method, route, status)
    shown, seen_status = labels_of(method, route, status)
    if status < 500 and table.room() < RESERVED and not _known(table, shown, route, seen_status):
        shown, route, seen_status = "other", UNMATCHED_ROUTE, f"{status // 100}xx"  # see the docstring
    buckets = tuple(table.where(key(DURATION, shown, route, index)) for index in range(len(BUCKETS) + 1))
    where = (
        table.where(key(REQUESTS, shown, route, seen_status)),
        buckets,
        table.where(key(DURATION_SUM, shown, route)),
    )
    here.requests[asked] = where
    return where


def labels_of(method: str, route: str, status: int) -> tuple[str, str]:
    """The method and status a request is counted under (its route is the matched pattern)."""
    shown = "GET" if method == "HEAD" and route != UNMATCHED_ROUTE else method
    return (
        shown if shown in METHODS else "other",
        str(status) if status in STATUSES else f"{status // 100}xx",
    )


def _known(table: SlotTable, method: str, route: str, status: str) -> bool:
    """Whether this series is in the slot already (counting it takes no new entry)."""
    return (
        key(REQUESTS, method, route, status) in table.index
        and key(DURATION_SUM, method, route) in table.index
    )


def command_run(outcome: str) -> None:
    """``done``, ``conflict`` (still conflicting after the retries) or ``failed``."""
    table().add(key(COMMANDS, outcome))


def conflict() -> None:
    table().add(CONFLICTS)


def retried() -> None:
    table().add(RETRIES)


def events_stored(count: int) -> None:
    table().add(EVENTS_STORED, count)


def built(ok: bool) -> None:
    table().add(key(BUILDS, "ok" if ok else "failed"))


def pool_checkout() -> None:
    table().add(POOL_CHECKOUTS)


def projected(projection: str, count: int) -> None:
    table().add(key(PROJECTED, projection), count)
