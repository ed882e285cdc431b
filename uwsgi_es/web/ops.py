"""The operational routes' bodies (``/health``, ``/ready``, ``/worker``), shared by every web layer,
and who may see their details.

``/health`` and ``/ready`` are for load balancers and orchestrators anywhere: they answer with a
status only. Process details (pids, worker ids, the pool, why a build failed) are for operators:
clients whose address is in ``UWSGI_ES_OPERATOR_NETWORKS`` (default: this host's loopback). To
anyone else ``/worker`` does not exist (404), and ``/health`` and ``/ready`` carry no pid.

The address is ``REMOTE_ADDR`` as the server gives it: uWSGI's HTTP router and nginx speaking the
uwsgi protocol pass the real client's. A proxy on this host that speaks HTTP to uWSGI makes every
client look local: set ``UWSGI_ES_OPERATOR_NETWORKS`` to your admin network (or empty) there.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Any

from uwsgi_es.lifecycle.hosting import Hosting
from uwsgi_es.lifecycle.process import worker_id
from uwsgi_es.lifecycle.registry import hosted_applications
from uwsgi_es.readside import status as readside
from uwsgi_es.settings import Networks

log = logging.getLogger("uwsgi_es.web")


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


def hosting_of(app: Any) -> Hosting:
    """How ``app``, one of this process's applications, is hosted (its registry slot says; an
    application of uwsgi_es's own core, or a ``Hosting``, hosts itself)."""
    slot = next((h for h in hosted_applications() if h.app is app), None)
    return slot.hosting if slot is not None else app


def ready_report(app: Any, operator: bool = True) -> dict[str, Any]:
    """Check that this worker's application (of any kind) can serve, writes included (raises if
    it cannot)."""
    hosting_of(app).check_ready()
    projections = readside.check(app)  # a projection stopped at an event: 503 naming it
    if not operator:
        return {"status": "ready"}
    report: dict[str, Any] = {"status": "ready", "pid": os.getpid(), "worker_id": worker_id()}
    if projections:
        report["projections"] = projections  # each one's position and lag
    return report


def worker_report(app: Any) -> dict[str, Any]:
    """Which process answered, and what it built: how tests prove one application per worker.
    ``app``: one of this process's applications (its registry slot says how it is hosted)."""
    slot = next((h for h in hosted_applications() if h.app is app), None)
    hosting = hosting_of(app)
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
    projections = readside.report(app)
    if projections:
        report["projections"] = projections
    return report


Gauges = dict[str, tuple[str, str, dict[tuple[str, ...], float]]]


def projection_gauges(app: Any | None) -> Gauges:
    """Each projection's position and lag, read now (for ``/metrics``); none without an
    application, or while its database does not answer (the scrape still answers, and says so
    in the log)."""
    if app is None:
        return {}
    try:
        reported = readside.report(app)
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
