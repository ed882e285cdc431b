"""Rules for applications of the eventsourcing library: its runners started in the master, and an
aggregate cache that does not fast-forward shared by several workers."""

from __future__ import annotations

from collections.abc import Iterator

from uwsgi_es.doctor.observed import Finding, Observed

# Where the library's runners start their threads (ProjectionRunner, the systems' runners).
RUNNER_MODULES = ("/eventsourcing/projection.py", "/eventsourcing/system.py")
FALSE = ("0", "n", "no", "f", "false", "off")


def runners_in_the_master(seen: Observed) -> Iterator[Finding]:
    """A library runner started at import or in a hook before the fork: its threads exist in the
    master only, and each worker that imports the module again (lazy-apps) starts one more."""
    started = [
        e
        for e in seen.events
        if e["record"] == "thread" and e["where"].rsplit(":", 1)[0].endswith(RUNNER_MODULES)
    ]
    if not started:
        return
    named = "; ".join(f"{e['runs']} ({e['where']})" for e in started)
    yield Finding(
        True,
        f"an eventsourcing library runner started in the master ({len(started)} thread(s))",
        "its threads run in the master only, which serves nothing; no worker runs the projection "
        f"or follower, and code that starts one per process would run competing copies: {named}",
        "name the projection or follower in UWSGI_ES_PROJECTIONS and give it a mule "
        "(`mule = %b-es-mule.py`), or run it with `uwsgi-es project NAME`; never start a runner at import",
    )


def stale_aggregate_cache(seen: Observed) -> Iterator[Finding]:
    """The library's aggregate cache with fast-forwarding off, in more than one worker: each keeps
    aggregates without the events the others stored since."""
    if seen.processes < 2:
        return
    for name, value in sorted(seen.environment.items()):
        if not name.endswith("AGGREGATE_CACHE_FASTFORWARD") or value.strip().lower() not in FALSE:
            continue
        maxsize = seen.environment.get(name.replace("_FASTFORWARD", "_MAXSIZE"), "")
        if maxsize.strip() in ("", "0"):
            continue  # no cache: nothing goes stale
        yield Finding(
            True,
            f"{name}={value} with {seen.processes} workers",
            f"each worker caches up to {maxsize} aggregates and, without fast-forwarding, never reads "
            "the events the other workers stored since: its commands decide on old state (and fail "
            "on a conflict, retried) and its reads answer old versions",
            f"unset {name} (the library fast-forwards cached aggregates by default), or turn the "
            f"cache off ({name.replace('_FASTFORWARD', '_MAXSIZE')}=0)",
        )
