"""The benchmark's targets, as data, in one place: what each comparison must reach to count as met.

A ratio is ours / the anchor's throughput (median of the per-round ratios); a boot target is the
median per-worker build time after the fork; memory is the median RSS of a worker.
"""

from __future__ import annotations

# (scenario, anchor) -> the lowest acceptable ratio; issue 15 set the write, short-read, library
# and ceiling targets.
RATIO_TARGETS: dict[tuple[str, str], float] = {
    ("ceiling: GET /health", "bare WSGI hello"): 0.8,  # issue 27 (issue 15 asked 0.9)
    ("write: deposit", "raw SQL"): 0.7,
    ("write: deposit", "eventsourcing"): 2.0,
    ("read: 10 events", "raw SQL"): 0.9,
    ("read: 10 events", "eventsourcing"): 2.0,
    ("read: 100 events", "raw SQL"): 0.9,
    ("read: 100 events", "eventsourcing"): 2.0,
    # Long streams: snapshots and the per-worker cache spare the replay (issue 14).
    ("read: 1,000 events", "raw SQL"): 0.9,
    ("write: deposit", "raw LWT"): 0.7,
    ("read: 10 events", "raw LWT"): 0.9,
    ("read: 100 events", "raw LWT"): 0.9,
    # The runner does more per event than the loop: a tracking record, domain events decoded and
    # dispatched by type. Within 30% of a loop that does none of it.
    ("projection: catch up", "plain loop"): 0.7,
    # Issue 27: a runner must at least keep pace with writers depositing flat out (applied events
    # per second against written, in the same window, while it has a backlog).
    ("projection: under write load", "the writers"): 1.0,
}
# Where one store's target differs: (scenario, anchor, store) -> ratio.
STORE_TARGETS: dict[tuple[str, str, str], float] = {
    ("write: deposit", "raw SQL", "PostgreSQL"): 0.8,
    ("read: 10 events", "raw SQL", "PostgreSQL"): 1.0,
}

BOOT_TARGETS_MS: dict[str, float] = {"SQLite": 50, "PostgreSQL": 100, "Cassandra": 1000}
MEMORY_TARGET_MB = 40.0


def ratio_target(scenario: str, anchor: str, store: str = "-") -> float:
    return STORE_TARGETS.get((scenario, anchor, store), RATIO_TARGETS[(scenario, anchor)])
