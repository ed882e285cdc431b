"""What the doctor concludes from what it saw: each problem with why it matters and the fix.

Each rule is a function of one ``Observed`` (the probe's records and uWSGI's log) yielding
findings; a finding that is not a problem is a note (what was checked and passed, e.g. the
connection budget). The rules on what the master made before the fork live here; those on the
options, the mules and the log in ``options``, ``mules`` and ``logs``. ``diagnose`` runs them all,
or only the log's when the instance stopped before its master wrote anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from uwsgi_es.doctor import library, logs, mules, options
from uwsgi_es.doctor.observed import Finding, Observed, lazy, listed
from uwsgi_es.doctor.sockets import Socket

__all__ = ["RULES", "Finding", "Observed", "diagnose"]

IN_EACH_WORKER = (
    "build it in each worker: serve uwsgi_es.servers.asgi.asgi(...) (or its lifespan()), which builds in "
    "every worker's ASGI lifespan; never in granian's on_startup, at import under gunicorn's --preload, "
    "or at import of a module the server's parent loads"
)
AFTER_THE_FORK = (
    "open it after the fork: in a post-fork hook (uwsgi_es.install() builds a uwsgi_es or "
    "eventsourcing application there), lazily on first use in the worker, or under `lazy-apps = true`"
)


def shared_connections(seen: Observed) -> Iterator[Finding]:
    """Sockets a worker holds that its master opened before the fork, by what they connect to."""
    by_remote: dict[str, tuple[Socket, list[int]]] = {}
    for worker in seen.workers:
        for raw in worker.get("inherited", []):
            found = Socket(**raw)
            by_remote.setdefault(found.remote, (found, []))[1].append(worker["worker"])
    for remote, (found, workers) in sorted(by_remote.items()):
        opened = next((e for e in seen.events if _port_of(e.get("address", "")) == _port_of(remote)), None)
        origin = (
            f"; opened at {opened['where']}{' during an import' if opened['importing'] else ''}"
            if opened is not None
            else "; opened by a C library (no Python-level connect was seen): e.g. psycopg at import"
        )
        yield Finding(
            True,
            f"a connection to {found.what} opened in the {seen.parent} is shared by {len(workers)} workers",
            f"the same socket ({found.local} -> {remote}) is open in the {seen.parent} and in workers "
            f"{listed(workers)}: their queries and answers interleave on it, and one worker closing it "
            f"breaks the others{origin}",
            _after_the_fork(seen),
        )


def connections_in_the_master(seen: Observed) -> Iterator[Finding]:
    """Connections and applications made in the master (by import or a hook before the fork)."""
    shared = {raw["remote"] for w in seen.workers for raw in w.get("inherited", [])}
    for event in seen.events:
        when = "at import" if event.get("importing") else "before the fork"
        if event["record"] == "sqlite3.connect":
            yield Finding(
                True,
                f"a SQLite database was opened in the {seen.parent} {when}",
                f"{event['database']} was opened at {event['where']}: a SQLite connection must never "
                "cross a fork (the workers would share its file locks and cache)",
                _after_the_fork(seen),
            )
        elif event["record"] == "socket.connect" and _port_of(event["address"]) not in map(_port_of, shared):
            yield Finding(
                True,
                f"a connection was made in the {seen.parent} {when}",
                f"to {event['address']} at {event['where']} (closed before the fork, so not shared): "
                "a connection at import makes the start fail whenever that server is down, with no retry",
                _after_the_fork(seen),
            )
        elif event["record"] == "uwsgi_es.build":
            yield Finding(
                True,
                f"an application ({event['application']}) was built in the {seen.parent} {when}",
                f"at {event['where']}: built before the fork, every worker would share its connections",
                IN_EACH_WORKER
                if seen.server
                else "call uwsgi_es.install() at import, never init_application(): it builds in each worker",
            )


def threads_in_the_master(seen: Observed) -> Iterator[Finding]:
    started = _threads_started(seen)
    counted = [int(w["master_threads"]) - 1 for w in seen.workers if "master_threads" in w]
    if counted:  # what uWSGI's workers counted in their master once they accepted
        count = max(counted)
        title = f"{count} thread(s) running in the master"
    else:  # no worker looked (or another server, whose parent runs threads of its own): what Python started
        count = len(started)
        title = f"{count} thread(s) started in the {seen.parent}"
    if count <= 0:
        return
    named = "; ".join(f"{e['thread']!r} running {e['runs']} ({e['where']})" for e in started)
    if seen.server:
        fix = "start threads in each worker (in the ASGI lifespan, or on first use), never in the parent"
    elif seen.enabled("py-call-uwsgi-fork-hooks"):
        fix = (
            "start threads after the fork (in a post-fork hook or on first use in the worker): "
            "py-call-uwsgi-fork-hooks keeps the GIL safe across the fork, not the thread's own locks"
        )
    else:
        fix = (
            "start threads after the fork (in a post-fork hook or on first use in the worker), or if "
            "you cannot (a library builds at import), set `py-call-uwsgi-fork-hooks = true` and run no "
            "mule"
        )
    yield Finding(
        True,
        title,
        f"a thread in the {seen.parent} does not exist in the workers, and a lock it holds at the moment "
        f"of a fork (the GIL too) stays locked in them forever{': ' + named if named else ''}",
        fix,
    )


def workers_accepting(seen: Observed) -> Iterator[Finding]:
    if len(seen.accepting) >= seen.processes:
        return
    if seen.server:
        yield from _workers_building(seen)
        return
    why = "the others did not reach uWSGI's accepting phase (see the uWSGI log below)"
    if logs.worker_deaths(seen.log):
        why = "workers died as they started (see the uWSGI log below)"
    elif _threads_started(seen) and not seen.enabled("py-call-uwsgi-fork-hooks"):
        why = (
            "the others hang before their first request: a thread of the master held the GIL or "
            "another lock at their fork (see the thread below)"
        )
    yield Finding(
        True, f"only {len(seen.accepting)} of {seen.processes} workers started accepting requests", why
    )


def _workers_building(seen: Observed) -> Iterator[Finding]:
    """Under another server: a worker is ready once it built its application, unless its target
    builds on the first request (a WSGI interface), where only the parent could be checked."""
    if not seen.accepting and lazy(seen, seen.processes):
        yield Finding(
            False,
            "no worker built an application while starting: they build on their first request",
            f"a WSGI interface ({seen.server} without an ASGI lifespan) builds lazily, so only what the "
            "parent made was checked; serve uwsgi_es.servers.asgi.asgi(...) to have each worker build "
            "(and be checked) as it starts",
        )
    else:
        yield Finding(
            True,
            f"only {len(seen.accepting)} of {seen.processes} workers built their application",
            f"the others did not build their application (see the {seen.server} log below)",
        )


def _after_the_fork(seen: Observed) -> str:
    return IN_EACH_WORKER if seen.server else AFTER_THE_FORK


def _threads_started(seen: Observed) -> list[dict[str, str]]:
    return [e for e in seen.events if e["record"] == "thread"]


Rule = Callable[[Observed], Iterator[Finding]]


def _each(*rules: Rule) -> Rule:
    """Several rules under one clean note."""

    def run(seen: Observed) -> Iterator[Finding]:
        for rule in rules:
            yield from rule(seen)

    return run


# Each rule, and what a clean result says ("" says nothing).
RULES: tuple[tuple[Rule, str], ...] = (
    (workers_accepting, "every worker accepts requests"),
    (
        options.risky_options,
        "options: master, die-on-term, need-app; no wsgi-file; no post-fork hook left unrun",
    ),
    (
        _each(options.osafterfork, options.unset_variables),
        "no fork option fatal on some Python; no $(VARIABLE) left unset",
    ),
    (
        _each(
            mules.fork_hooks_with_mules, mules.function_mule_under_lazy_apps, mules.mules_that_cannot_start
        ),
        "no mule that cannot start, and none died",
    ),
    (logs.crashes, "no crash in uWSGI's log"),
    (shared_connections, "no worker shares a connection with its master"),
    (connections_in_the_master, "no connection, SQLite database or application made in the master"),
    (threads_in_the_master, "no thread running in the master"),
    (
        _each(library.runners_in_the_master, library.stale_aggregate_cache),
        "no eventsourcing library runner in the master, nor a stale aggregate cache across workers",
    ),
)
# Under a server other than uWSGI (uwsgi-es doctor -- COMMAND): what its parent made, what its
# workers built and hold, what it printed.
SERVER_RULES: tuple[tuple[Rule, str], ...] = (
    (workers_accepting, "every worker built its own application"),
    (logs.server_failures, "no traceback or crash in the server's log"),
    (shared_connections, "no worker shares a connection with its parent"),
    (connections_in_the_master, "no connection, SQLite database or application made in the parent"),
    (threads_in_the_master, "no Python thread started in the parent"),
)
# What the log alone tells, when uWSGI stopped before its master wrote a record.
LOG_RULES: tuple[tuple[Rule, str], ...] = ((logs.address_in_use, ""), (logs.crashes, ""))


def diagnose(seen: Observed) -> list[Finding]:
    findings = []
    for rule, clean in SERVER_RULES if seen.server else RULES if seen.options else LOG_RULES:
        found = list(rule(seen))
        findings += found or ([Finding(False, clean, "")] if clean else [])
    return findings


def _port_of(address: str) -> str:
    """``127.0.0.1:5432`` -> ``5432`` (a unix socket's path is its own "port")."""
    return address.rsplit(":", 1)[-1]
