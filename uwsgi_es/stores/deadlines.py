"""The deadline of the request being served, for its database work: its arrival plus the store's
bound (``UWSGI_ES_LOCK_TIMEOUT``, or SQLite's busy timeout).

Why: under uWSGI's gevent loop (uwsgi.ini, no monkey-patching) a database call that waits for a
lock stops every greenlet of its worker. Bounded per statement only, the k-th request queued
behind such waits would wait k times the bound. With a deadline per request, every wait of a
request is capped at what is left of its bound, a request whose database work would start past
its deadline is refused at once (``DeadlinePassedError``, 503 busy), and nothing is written for a
client that was already told 503 or gave up.

Under gevent that is not enough: a request's clock starts when the worker gets to it, and a worker
stopped in a wait gets to nobody. So there, within a request, the store's own operations wait for
a lock in slices of ``SLICE_SECONDS`` and run again after a yield (``sliceable``), taking turns
(``turn``): after a slice that timed out, no operation of the process starts for another slice, in
which the worker answers ``/health``, takes in new requests and refuses the late ones.

The clock is the web layer's (``start`` when a request arrives, ``not_counted`` around the time a
request waits for its client or its projection); outside a request (a mule, the CLI) there is no
deadline, only the bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from uwsgi_es.runtime import process

# The longest one blocking wait lasts under gevent, when the store runs the operation again after it.
SLICE_SECONDS = 0.05
# How often an operation waiting for its turn looks again.
_TURN_POLL_SECONDS = 0.005


class _Clock:
    """When a request arrived, and how long it has waited for things other than the database."""

    __slots__ = ("arrived", "excluded", "paused_at")

    def __init__(self, arrived: float) -> None:
        self.arrived = arrived
        self.excluded = 0.0
        self.paused_at: float | None = None


_clock: ContextVar[_Clock | None] = ContextVar("uwsgi_es_request_clock", default=None)
# Set inside an operation whose waits may be cut into slices (its caller runs it again).
_sliceable: ContextVar[bool] = ContextVar("uwsgi_es_sliceable_wait", default=False)
# Global state, admitted: whether an operation of this process holds the turn, and when the next
# may start after a slice timed out (the worker's other greenlets run in between).
_turn_taken = False
_next_turn_at = 0.0


def start() -> Token[_Clock | None]:
    """The request being served arrived now (the web layer calls it first; ``stop`` with the token)."""
    return _clock.set(_Clock(time.monotonic()))


def stop(token: Token[_Clock | None]) -> None:
    _clock.reset(token)


@contextmanager
def not_counted() -> Iterator[None]:
    """Time spent inside is not database time (the request waits for its client, or for its
    projection): its deadline moves on by as much. Nested uses count once."""
    clock = _clock.get()
    if clock is None or clock.paused_at is not None:
        yield
        return
    clock.paused_at = time.monotonic()
    try:
        yield
    finally:
        clock.excluded += time.monotonic() - clock.paused_at
        clock.paused_at = None


def left(bound: float) -> float:
    """Seconds of ``bound`` the request being served has left for its database work (``bound``
    outside a request; 0 or less once its deadline passed)."""
    clock = _clock.get()
    if clock is None:
        return bound
    now = clock.paused_at if clock.paused_at is not None else time.monotonic()
    return bound - (now - clock.arrived - clock.excluded)


def wait_limit(bound: float) -> float:
    """The longest the next database wait may last: what is left of ``bound`` (0 or less: past the
    deadline), and at most a slice inside ``sliceable``."""
    remaining = left(bound)
    if remaining > SLICE_SECONDS and _sliceable.get():
        return SLICE_SECONDS
    return remaining


def slices_waits() -> bool:
    """Whether waits are cut into slices here: within a request, under uWSGI's gevent loop, and
    not inside an operation that already does (its caller runs it again, not this one)."""
    return _clock.get() is not None and not _sliceable.get() and bool(process.option("gevent"))


@contextmanager
def sliceable() -> Iterator[None]:
    """Inside, a wait stops after a slice: the caller runs the operation again after a yield."""
    token = _sliceable.set(True)
    try:
        yield
    finally:
        _sliceable.reset(token)


@contextmanager
def turn(bound: float) -> Iterator[list[bool]]:
    """This process's turn to run an operation whose waits are sliced: waits, yielding, while
    another holds it or until a slice after the last one that timed out. The caller sets the
    yielded flag when its slice timed out. Past the request's deadline it proceeds without the
    turn (its first statement is refused)."""
    global _turn_taken, _next_turn_at
    while _turn_taken or time.monotonic() < _next_turn_at:
        if left(bound) <= 0:
            yield [False]
            return
        process.pause(_TURN_POLL_SECONDS)
    _turn_taken = True
    timed_out = [False]
    try:
        yield timed_out
    finally:
        _turn_taken = False
        if timed_out[0]:
            _next_turn_at = time.monotonic() + SLICE_SECONDS
