"""What the doctor concludes from what the probe saw: each problem with why it matters and the fix.

Each rule is a function of the records (``uwsgi_es.doctor.probe``) returning findings; a finding
that is not a problem is a note (what was checked and passed, e.g. the connection budget).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from uwsgi_es.doctor.sockets import Socket

AFTER_THE_FORK = (
    "open it after the fork: in a post-fork hook (uwsgi_es.hooks.install() builds a uwsgi_es or "
    "eventsourcing application there), lazily on first use in the worker, or under `lazy-apps = true`"
)


@dataclass(frozen=True)
class Finding:
    problem: bool
    title: str
    detail: str
    fix: str = ""


@dataclass
class Observed:
    """Everything the probe wrote, sorted by kind."""

    options: dict[str, list[Any]]
    environment: dict[str, str]
    events: list[dict[str, Any]]  # audit records from the master
    workers: list[dict[str, Any]]  # one per worker that reached the accepting phase

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> Observed:
        observed = cls({}, {}, [], [])
        for record in records:
            if record.get("record") == "master":
                observed.options, observed.environment = record["options"], record["environment"]
            elif record.get("record") == "worker":
                observed.workers.append(record)
            else:
                observed.events.append(record)
        return observed

    def enabled(self, *names: str) -> bool:
        """Whether any of these uWSGI options is set to something true."""
        for name in names:
            for value in self.options.get(name, []):
                if value is True or str(value).strip().lower() not in ("", "0", "false", "no", "off"):
                    return True
        return False

    def first(self, name: str) -> str | None:
        values = self.options.get(name)
        return str(values[-1]) if values else None

    @property
    def processes(self) -> int:
        raw = self.first("processes") or self.first("workers") or "1"
        return int(raw) if raw.isdigit() else 1


def risky_options(seen: Observed) -> Iterator[Finding]:
    if seen.first("wsgi-file") or seen.first("file"):
        yield Finding(
            True,
            "the application is loaded with wsgi-file",
            f"uWSGI runs {seen.first('wsgi-file') or seen.first('file')} under a made-up module name "
            "(uwsgi_file_...): classes defined there carry that name into pickles and into the topics "
            "of stored events, which nothing outside this uWSGI can import",
            "module = package.module:application (the file's import path)",
        )
    if not seen.enabled("master"):
        yield Finding(
            True,
            "no master process",
            "without the master nothing respawns a dead worker, and post-fork hooks, mules, "
            "graceful reloads and the sharedarea of /metrics all need it",
            "master = true",
        )
    if not seen.enabled("die-on-term"):
        yield Finding(
            True,
            "SIGTERM reloads uWSGI instead of stopping it",
            "uWSGI 2.0 takes SIGTERM as 'reload': systemd, Docker and Kubernetes stop with SIGTERM, "
            "wait, then SIGKILL, cutting the requests in flight",
            "die-on-term = true",
        )
    if not seen.enabled("need-app"):
        yield Finding(
            True,
            "uWSGI serves without an application when the import fails",
            "every request then answers 'Internal Server Error' from uWSGI itself, and the instance "
            "looks alive to a supervisor",
            "need-app = true",
        )
    callables = [str(m) for m in seen.options.get("mule", []) if _is_callable_mule(str(m))]
    if seen.enabled("lazy-apps", "lazy") and callables:
        yield Finding(
            True,
            "a module:function mule under lazy-apps",
            f"uWSGI cannot start `mule = {callables[0]}` under lazy-apps: the mule segfaults before "
            "any Python runs, at every respawn (unbit/uwsgi#1746)",
            "give the mule a script instead; for uwsgi_es's projection runner: "
            "mule = /path/to/uwsgi_es/readside/mule_script.py",
        )
    hooked = [w["worker"] for w in seen.workers if w.get("postfork_hooks") or w.get("post_fork_hook")]
    if seen.enabled("lazy-apps", "lazy") and hooked:
        yield Finding(
            True,
            "post-fork hooks under lazy-apps never run",
            f"with lazy-apps each worker imports the application after its fork, so the post-fork "
            f"hooks registered at import (seen in workers {_ids(hooked)}) have no fork left to follow: "
            "what they would build is never built",
            "build at import under lazy-apps (uwsgi_es.hooks.install() notices and does), or drop lazy-apps",
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
            f"a connection to {found.what} opened in the master is shared by {len(workers)} workers",
            f"the same socket ({found.local} -> {remote}) is open in the master and in workers "
            f"{_ids(workers)}: their queries and answers interleave on it, and one worker closing it "
            f"breaks the others{origin}",
            AFTER_THE_FORK,
        )


def connections_in_the_master(seen: Observed) -> Iterator[Finding]:
    """Connections and applications made in the master (by import or a hook before the fork)."""
    shared = {raw["remote"] for w in seen.workers for raw in w.get("inherited", [])}
    for event in seen.events:
        when = "at import" if event.get("importing") else "before the fork"
        if event["record"] == "sqlite3.connect":
            yield Finding(
                True,
                f"a SQLite database was opened in the master {when}",
                f"{event['database']} was opened at {event['where']}: a SQLite connection must never "
                "cross a fork (the workers would share its file locks and cache)",
                AFTER_THE_FORK,
            )
        elif event["record"] == "socket.connect" and _port_of(event["address"]) not in map(_port_of, shared):
            yield Finding(
                True,
                f"a connection was made in the master {when}",
                f"to {event['address']} at {event['where']} (closed before the fork, so not shared): "
                "a connection at import makes the start fail whenever that server is down, with no retry",
                AFTER_THE_FORK,
            )
        elif event["record"] == "uwsgi_es.build":
            yield Finding(
                True,
                f"an application ({event['application']}) was built in the master {when}",
                f"at {event['where']}: built before the fork, every worker would share its connections",
                "call uwsgi_es.hooks.install() at import, never init_application(): it builds in each worker",
            )


def threads_in_the_master(seen: Observed) -> Iterator[Finding]:
    running = max((int(w.get("master_threads", 0)) for w in seen.workers), default=0)
    if running <= 1:
        return
    started = [e for e in seen.events if e["record"] == "thread"]
    named = "; ".join(f"{e['thread']!r} running {e['runs']} ({e['where']})" for e in started)
    yield Finding(
        True,
        f"{running - 1} thread(s) running in the master",
        "a thread in the master does not exist in the workers, and a lock it holds at the moment of "
        f"a fork stays locked in them forever{': ' + named if named else ''}",
        "start threads after the fork (in a post-fork hook or on first use in the worker)",
    )


def workers_accepting(seen: Observed) -> Iterator[Finding]:
    if len({w["worker"] for w in seen.workers}) < seen.processes:
        yield Finding(
            True,
            f"only {len(seen.workers)} of {seen.processes} workers started accepting requests",
            "the others did not reach uWSGI's accepting phase in time (see the uWSGI log below)",
        )


# Each rule, and what a clean result says.
RULES: tuple[tuple[Callable[[Observed], Iterator[Finding]], str], ...] = (
    (workers_accepting, "every worker accepts requests"),
    (
        risky_options,
        "options: master, die-on-term, need-app; no wsgi-file; nothing lazy-apps cannot run",
    ),
    (shared_connections, "no worker shares a connection with its master"),
    (connections_in_the_master, "no connection, SQLite database or application made in the master"),
    (threads_in_the_master, "no thread running in the master"),
)


def diagnose(seen: Observed) -> list[Finding]:
    findings = []
    for rule, clean in RULES:
        found = list(rule(seen))
        findings += found or [Finding(False, clean, "")]
    return findings


def _is_callable_mule(value: str) -> bool:
    """``package.module:function`` (not a script path, not a bare ``mule`` flag)."""
    return ":" in value and not value.endswith(".py") and "/" not in value


def _ids(numbers: Iterable[int]) -> str:
    return ", ".join(str(n) for n in sorted(set(numbers)))


def _port_of(address: str) -> str:
    """``127.0.0.1:5432`` -> ``5432`` (a unix socket's path is its own "port")."""
    return address.rsplit(":", 1)[-1]
