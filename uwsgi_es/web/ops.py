"""The operational routes' bodies (``/health``, ``/ready``, ``/worker``), shared by every web layer,
and who may see their details.

``/health`` and ``/ready`` are for load balancers and orchestrators anywhere: they answer with a
status only. Process details (pids, worker ids, the pool, why a build failed) are for operators:
clients whose address is in ``UWSGI_ES_OPERATOR_NETWORKS`` (default: this host's loopback). To
anyone else ``/worker`` does not exist (404), and ``/health`` and ``/ready`` carry no pid.

``/ready`` is anonymous, so it must not cost a write per call: a worker checks in full (its store
takes a write, a committed heartbeat; every projection can run) at most once per
``READY_RECHECK_SECONDS``, and answers from that check in between, touching no database (a ping per
call, one read, would still cost a flood's worth of round trips). A failure is checked again by the
next call. A load balancer therefore learns of a fault at most ``READY_LONGEST_SECONDS`` later.

The address is ``REMOTE_ADDR`` as the server gives it: uWSGI's HTTP router and nginx speaking the
uwsgi protocol pass the real client's. A proxy on this host that speaks HTTP to uWSGI makes every
client look local: set ``UWSGI_ES_OPERATOR_NETWORKS`` to your admin network (or empty) there.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from uwsgi_es.lifecycle.hosting import Hosting
from uwsgi_es.lifecycle.registry import slots
from uwsgi_es.readside import status as readside
from uwsgi_es.runtime.process import worker_id
from uwsgi_es.settings import Networks

log = logging.getLogger("uwsgi_es.web")
# How long a worker's last full check stands for /ready (see the docstring), and the oldest check an
# answer may reflect: a request arriving while another re-checks answers the previous result.
READY_RECHECK_SECONDS = 1.0
READY_LONGEST_SECONDS = 2 * READY_RECHECK_SECONDS


def is_operator(environ: Mapping[str, Any], networks: Networks) -> bool:
    """Whether the request comes from an operator's address (remembered per address: parsing one
    costs more than the rest of a ``/health``)."""
    address = str(environ.get("REMOTE_ADDR", ""))
    known = _operators.get(address)
    if known is None or known[0] is not networks:
        if len(_operators) >= _REMEMBERED_ADDRESSES:
            _operators.clear()
        known = _operators[address] = (networks, _in_networks(address, networks))
    return known[1]


_operators: dict[str, tuple[Networks, bool]] = {}  # address -> (the networks asked about, answer)
_REMEMBERED_ADDRESSES = 4096


def _in_networks(remote_addr: str, networks: Networks) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr.split("%", 1)[0])
    except ValueError:
        return False
    return any(address in network for network in networks)


def health_report(operator: bool) -> dict[str, Any]:
    """Liveness: the process answers. Touches no database."""
    return {"status": "ok", "pid": os.getpid()} if operator else {"status": "ok"}


def hosting_in_slot(app: Any) -> Hosting:
    """How ``app``, one of this process's applications, is hosted (its registry slot says; an
    application of uwsgi_es's own core, or a ``Hosting``, hosts itself)."""
    slot = next((h for h in slots() if h.app is app), None)
    return slot.hosting if slot is not None else app


def ready_report(app: Any, operator: bool = True) -> dict[str, Any]:
    """Check that this worker's application (of any kind) can serve, writes included (raises if
    it cannot)."""
    hosting = hosting_in_slot(app)
    projections = check_ready(hosting, lambda: {**readside.check(app), **hosted_projections(hosting)})
    if not operator:
        return {"status": "ready"}
    report: dict[str, Any] = {"status": "ready", "pid": os.getpid(), "worker_id": worker_id()}
    if projections:
        report["projections"] = projections  # each one's position and lag
    return report


class _Proof:
    """This process's last full readiness check: of which hosting, when, and what it found (the
    projections) or raised."""

    def __init__(self) -> None:
        self.hosting: Hosting | None = None
        self.pid = 0
        self.at = 0.0
        self.projections: dict[str, dict[str, int]] = {}
        self.failure: Exception | None = None
        self.checking = threading.Lock()  # one full check at a time; the others answer the last


_proof = _Proof()


def check_ready(
    hosting: Hosting, projections: Callable[[], dict[str, dict[str, int]]]
) -> dict[str, dict[str, int]]:
    """``hosting.check_ready()`` (a write) and ``projections()`` at most once per
    ``READY_RECHECK_SECONDS`` in this process, the projections as last found in between; raises as
    they do. A failure is checked again by the next call. While one request checks, the others
    answer its predecessor's result if it is younger than ``READY_LONGEST_SECONDS``: no second write
    at once, and no wait (under gevent a blocking lock would stall the whole worker); else (a worker
    asked nothing for a while) they check too."""
    now = time.monotonic()
    known = _proof.hosting is hosting and _proof.pid == os.getpid()
    if known and _proof.failure is None and now - _proof.at < READY_RECHECK_SECONDS:
        return _proof.projections
    checking = _proof.checking.acquire(blocking=False)
    if not checking and known and now - _proof.at < READY_LONGEST_SECONDS:
        # Another request of this worker is checking in full right now.
        if _proof.failure is not None:
            raise _proof.failure.with_traceback(None)  # shared: its traceback must not grow per call
        return _proof.projections
    try:
        hosting.check_ready()
        found = projections()  # a projection stopped at an event: 503 naming it
    except Exception as exc:
        _proof.hosting, _proof.pid, _proof.failure = hosting, os.getpid(), exc
        _proof.at = time.monotonic()
        raise
    except BaseException:  # the request is being ended (a timeout, the worker stopping)
        _proof.hosting = None
        raise
    else:
        _proof.projections, _proof.failure, _proof.at = found, None, time.monotonic()
        _proof.hosting, _proof.pid = hosting, os.getpid()
        return found
    finally:
        if checking:
            _proof.checking.release()


def worker_report(app: Any) -> dict[str, Any]:
    """Which process answered, and what it built: how tests prove one application per worker.
    ``app``: one of this process's applications (its registry slot says how it is hosted)."""
    slot = next((h for h in slots() if h.app is app), None)
    hosting = hosting_in_slot(app)
    report = {
        "pid": os.getpid(),
        "built_in_pid": slot.pid if slot is not None else getattr(app, "built_in_pid", None),
        "worker_id": worker_id(),
        "application": type(app).__name__,
        "store": hosting.describe(),
        # Objects inherited from the master that the garbage collector leaves alone (UWSGI_ES_GC_FREEZE).
        "gc_frozen": gc.get_freeze_count(),
    }
    details = getattr(hosting, "report", None)
    if callable(details):
        report.update(details())
    projections = {**readside.report(app), **hosted_projections(hosting)}
    if projections:
        report["projections"] = projections
    return report


def hosted_projections(hosting: Hosting) -> dict[str, dict[str, int]]:
    """The position and lag of the projections a hosting runs for its kind (the eventsourcing
    library's, ``UWSGI_ES_PROJECTIONS``); {} for a kind without."""
    report = getattr(hosting, "projections", None)
    return dict(report()) if callable(report) else {}


Gauges = dict[str, tuple[str, str, dict[tuple[str, ...], float]]]


def projection_gauges(app: Any | None) -> Gauges:
    """Each projection's position and lag, read now (for ``/metrics``); none without an
    application, or while its database does not answer (the scrape still answers, and says so
    in the log)."""
    if app is None:
        return {}
    try:
        reported = {**readside.report(app), **hosted_projections(hosting_in_slot(app))}
    except Exception as exc:
        log.warning("/metrics without the projections' lag: %s: %s", type(exc).__name__, exc)
        return {}
    return {
        "uwsgi_es_projection_lag_events": (
            "Events stored after a projection's position (counted up to a bound).",
            "projection",
            {(name,): float(state["lag"]) for name, state in reported.items()},
        ),
        "uwsgi_es_projection_position": (
            "The feed position a projection has applied.",
            "projection",
            {(name,): float(state["position"]) for name, state in reported.items()},
        ),
    }


def failure_report(error: BaseException) -> dict[str, Any]:
    """``/worker`` of a worker whose application could not be built: why (for operators only)."""
    return {
        "pid": os.getpid(),
        "worker_id": worker_id(),
        "detail": f"{type(error).__name__}: {error}",
    }
