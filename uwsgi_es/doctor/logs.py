"""What uWSGI's own log of the boot says (up to the moment the doctor stopped it): its options,
crashes, mules respawned, an address already taken. A serving worker says nothing about a
crash-looping mule, and an instance that exits before Python starts leaves nothing but its log.

The lines are uWSGI 2.0.31's: a dead mule is ``OOOPS mule 1 (pid: 123) crippled...trying
respawn...`` (then ``spawned uWSGI mule 1 (pid: 124)``), a segfault ``!!! uWSGI process 123 got
Segmentation Fault !!!``, a dead worker ``DAMN ! worker 1 (pid: 123) died, killed by signal 6``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from uwsgi_es.doctor.observed import Finding, Observed
from uwsgi_es.servers.uwsgi_ini import shown_options

CRASH = re.compile(r"Segmentation Fault|Fatal Python error|crippled", re.IGNORECASE)
MULE_SPAWNED = re.compile(r"spawned uWSGI mule (\d+) \(pid: (\d+)\)")
MULE_DIED = re.compile(r"mule (\d+) (?:\(pid: \d+\) )?(?:crippled|died)")
WORKER_DIED = re.compile(r"DAMN ! worker \d+")
# The processes other than mules (the master, workers, the HTTP router), and a crash's process.
OTHER_SPAWNED = re.compile(r"spawned uWSGI (?:master process|worker \d+|http \d+) \(pid: (\d+)")
PROCESS_CRASHED = re.compile(r"uWSGI process (\d+) got ")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b(?::.*)?$")
ADDRESS_IN_USE = re.compile(r"probably another instance of uWSGI is running on the same address \((.*)\)")


def configuration(log: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The options uWSGI printed at its start (``--show-config``, which the doctor adds), and the
    log without them (``uwsgi_es.servers.uwsgi_ini.shown_options``)."""
    return shown_options(log)


def crash_lines(log: list[str]) -> list[str]:
    return [line for line in log if CRASH.search(line)]


def mule_respawns(log: list[str]) -> dict[int, int]:
    """mule id -> how many times it died and was respawned."""
    counts: dict[int, int] = {}
    for line in log:
        found = MULE_DIED.search(line)
        if found:
            counts[int(found[1])] = counts.get(int(found[1]), 0) + 1
    return counts


def mule_crash_lines(log: list[str], mule: int) -> list[str]:
    """The crash lines of one mule: its own `crippled` lines and those naming one of its pids."""
    pids = {m[2] for m in map(MULE_SPAWNED.search, log) if m is not None and int(m[1]) == mule}
    return [
        line
        for line in crash_lines(log)
        if ((died := MULE_DIED.search(line)) is not None and int(died[1]) == mule)
        or any(re.search(rf"\b{pid}\b", line) for pid in pids)
    ]


def first_exception(log: list[str]) -> str:
    """The first line that ends a Python traceback (``RuntimeError: ...``), or ""."""
    return next((line.strip() for line in log if EXCEPTION.match(line.strip())), "")


def worker_deaths(log: list[str]) -> int:
    return sum(1 for line in log if WORKER_DIED.search(line))


def crashes(seen: Observed) -> Iterator[Finding]:
    """The first crash line no mule finding quotes already (those of the mules are theirs; so is
    one of a process the log never said it spawned, while mules die: a mule respawned as the
    doctor stopped the instance, which crashed before its master wrote the line)."""
    respawned = mule_respawns(seen.log)
    of_mules = {line for mule in respawned for line in mule_crash_lines(seen.log, mule)}
    if respawned:
        known = {m[1] for m in map(OTHER_SPAWNED.search, seen.log) if m is not None}
        of_mules |= {
            line
            for line in crash_lines(seen.log)
            if (crashed := PROCESS_CRASHED.search(line)) is not None and crashed[1] not in known
        }
    others = [line for line in crash_lines(seen.log) if line not in of_mules]
    if others:
        yield Finding(
            True,
            "a uWSGI process crashed during the boot",
            f"the log says {others[0].strip()!r} ({len(others)} such line(s))",
            "a finding above may name the cause; else read uWSGI's log around that line (its end is "
            "below when the instance did not boot)",
        )


def address_in_use(seen: Observed) -> Iterator[Finding]:
    for line in seen.log:
        found = ADDRESS_IN_USE.search(line)
        if found:
            yield Finding(
                True,
                f"the address {found[1]} is in use",
                "uWSGI could not bind it ('Address already in use') and exited: another uWSGI, or "
                "another server, listens there",
                "stop what listens there, or set UWSGI_ES_HTTP=127.0.0.1:<a free port>: uwsgi.ini and "
                "the deploy inis read it (another ini: change its address)",
            )
            return


def server_failures(seen: Observed) -> Iterator[Finding]:
    """A server other than uWSGI: a Python traceback or a crash in what it printed while starting."""
    tracebacks = sum(1 for line in seen.log if line.startswith("Traceback (most recent call last)"))
    crashed = crash_lines(seen.log) + [line for line in seen.log if "build_failed" in line]
    if tracebacks or crashed:
        first = first_exception(seen.log) or (crashed[0].strip() if crashed else "")
        yield Finding(
            True,
            f"a {seen.server} process failed while starting",
            f"its log shows {tracebacks} traceback(s) and {len(crashed)} crash or failed build line(s); "
            f"the first: {first!r}",
            "a finding above may name the cause; else read the server's log around that line",
        )
