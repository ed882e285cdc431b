"""The one retry of the package: run again after a conflict, a bounded number of times, with
exponential back-off and full jitter between the attempts.

Writers that collided spread out instead of colliding again in step (waits drawn from 0..2 ms,
0..4 ms, ... capped), and the wait yields to other greenlets under gevent (``process.pause``).
Our applications' commands, the library applications' commands and the Cassandra log's claims
all retry through here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from uwsgi_es.runtime import process

T = TypeVar("T")


def _nothing() -> None:
    return None


def back_off(attempt: int, cap: float = 0.1) -> None:
    """Wait before retry number ``attempt`` (1, 2, ...): a random time up to 2^attempt ms, at most
    ``cap`` seconds."""
    process.pause(random.uniform(0, min(cap, 0.001 * 2 ** min(attempt, 30))))


def retry_on_conflict(
    run: Callable[[], T],
    *,
    conflict: type[BaseException],
    retries: int,
    on_conflict: Callable[[], None] = _nothing,
    on_retry: Callable[[], None] = _nothing,
) -> T:
    """``run()``; when it raises ``conflict``, run it again, at most ``retries`` more times, backing
    off between the attempts. The last conflict propagates. ``on_conflict`` is called for every
    conflict met, ``on_retry`` before every retry (to count them)."""
    attempt = 0
    while True:
        try:
            return run()
        except conflict:
            on_conflict()
            if attempt >= retries:
                raise
            attempt += 1
            on_retry()
            back_off(attempt)
