"""What this process is, as uWSGI sees it: inside uWSGI or not, which worker or mule, how many.

A leaf: it imports nothing of ours, so every layer may ask it. Outside uWSGI (pytest, gunicorn,
Celery) every answer is the neutral one: worker 0, one process, one thread.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any

uwsgi: ModuleType | None
try:
    import uwsgi  # type: ignore[no-redef]  # exists only inside a uWSGI process
except ImportError:
    uwsgi = None


def stop_at_once_while_importing() -> None:
    """In a uWSGI worker that imports the application itself (lazy-apps), or a mule: until its build
    takes Python's SIGINT handler back (a runner mule's ``main`` keeps this one), a SIGINT (the
    master destroying the instance, e.g. ``need-app`` or fail-fast after another worker failed)
    ends the process at once, rather than as a KeyboardInterrupt traceback from the middle of an
    import. Run as this module is imported, which ``import uwsgi_es`` does first, and by the mule's
    module."""
    if uwsgi is None or not ((worker_id() and is_lazy()) or mule_id()):
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, exit_now)


def exit_now(signum: int, frame: object) -> None:
    """The SIGINT handler of ``stop_at_once_while_importing``, and of a runner mule's whole life."""
    os._exit(0)


def in_uwsgi() -> bool:
    return uwsgi is not None


def worker_id() -> int:
    """The uWSGI worker id (1..N); 0 in the master, a mule, or outside uWSGI."""
    return int(uwsgi.worker_id()) if uwsgi is not None else 0


def mule_id() -> int:
    """The uWSGI mule id (1..N); 0 anywhere else."""
    return int(getattr(uwsgi, "mule_id", lambda: 0)()) if uwsgi is not None else 0


# The `mule = ...` entries of uwsgi_es's projection runners (uwsgi_es.readside.mule): the script
# pip installs beside the uwsgi binary (`mule = %b-es-mule.py`), the script inside the package (an
# older form), or the function, which uWSGI cannot start under lazy-apps.
PROJECTION_MULE = "uwsgi_es.readside.mule:run"
PROJECTION_MULE_SCRIPTS = ("/uwsgi-es-mule.py", "uwsgi_es/readside/mule_script.py")


def runs_projections(mule: str) -> bool:
    """Whether a `mule = ...` value starts one of uwsgi_es's projection runners."""
    return mule == PROJECTION_MULE or mule.endswith(PROJECTION_MULE_SCRIPTS)


def is_projection_mule() -> bool:
    """True in a mule that runs a projection: it builds its application itself, and only when it
    has a projection to run."""
    mules, mine = options("mule"), mule_id() - 1
    return 0 <= mine < len(mules) and runs_projections(mules[mine])


def master_pid() -> int:
    """The uWSGI master's pid; 0 outside uWSGI."""
    return int(uwsgi.masterpid()) if uwsgi is not None else 0


def process_count() -> int:
    return int(uwsgi.numproc) if uwsgi is not None else 1


_declared_threads = 0  # outside uWSGI: the request threads a server integration said it runs


def declare_threads(count: int) -> None:
    """Say how many threads serve requests in this process, outside uWSGI (an ASGI server's pool)."""
    global _declared_threads
    _declared_threads = count


def thread_count() -> int:
    return int(option("threads") or _declared_threads or 1)


def is_forked() -> bool:
    """True in a worker or mule (uWSGI already forked this process from its master)."""
    return worker_id() > 0 or mule_id() > 0


def is_lazy() -> bool:
    """Whether each worker imports the application itself (lazy-apps), instead of the master."""
    return bool(option("lazy-apps") or option("lazy"))


def where() -> dict[str, Any]:
    """The fields that say which process a log event is about."""
    return {"worker": worker_id(), "mule": mule_id() or None, "pid": os.getpid()}


def role() -> str:
    """ "worker 3", "mule 1", "master" or "process" (outside uWSGI): for logs."""
    if uwsgi is None:
        return "process"
    if worker_id():
        return f"worker {worker_id()}"
    if mule_id():
        return f"mule {mule_id()}"
    return "master"


def option(name: str) -> str | None:
    """The last value of one of uWSGI's options, as text; None when unset or outside uWSGI."""
    if uwsgi is None:
        return None
    value = uwsgi.opt.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[-1]
    return value.decode() if isinstance(value, bytes) else str(value)


def options(name: str) -> list[str]:
    """Every value of one of uWSGI's options (e.g. each ``mule``), as text; [] outside uWSGI."""
    if uwsgi is None:
        return []
    value = uwsgi.opt.get(name)
    values = value if isinstance(value, list) else [] if value is None else [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


# Set while this context (a request's greenlet) holds a pooled database connection across its own
# work: it must not yield then (see ``holding_connection``).
_holding = ContextVar("uwsgi_es_holding_connection", default=False)


@contextmanager
def holding_connection() -> Iterator[None]:
    """Inside, ``pause`` sleeps without yielding: a greenlet that yielded while holding a connection
    could leave the worker's other greenlets waiting for the pool, which only it can refill."""
    token = _holding.set(True)
    try:
        yield
    finally:
        _holding.reset(token)


def holds_connection() -> bool:
    """Whether this context is inside ``holding_connection`` (it must not yield)."""
    return _holding.get()


def pause(seconds: float) -> None:
    """Wait without holding up this process's other requests: under uWSGI's gevent loop
    (uwsgi.ini) ``time.sleep`` would stop every greenlet of the worker; gevent's sleep yields
    (unless this context holds a connection: ``holding_connection``)."""
    if option("gevent") and not _holding.get():
        import gevent  # only under the gevent loop, where it is loaded already

        gevent.sleep(seconds)
    else:
        time.sleep(seconds)


stop_at_once_while_importing()
