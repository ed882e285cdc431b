"""The doctor's eyes inside uWSGI. ``uwsgi-es doctor`` adds it to the ini it boots:

    --shared-import uwsgi_es.doctor.probe  --hook-accepting rpc:uwsgi_es_doctor_accepting

Imported in the master before the application, it writes the instance's options (read from the
top of uWSGI's log, which ``--show-config`` fills), the Python version, and whether each mule's
script or module can be found (from the master's working directory and ``sys.path``, as the mules
will look). It installs a Python audit hook (PEP 578: the interpreter's own way to watch, nothing
patched) that notes, in the master only, every socket connected, SQLite database opened and
uwsgi_es application built, with the line of the caller that did it and whether an import was
running; and, through ``threading.setprofile``, every thread started there, with the function it
runs. Then each worker, once it accepts requests (uWSGI's ``hook-accepting``, after the post-fork hooks
and, under lazy-apps, after its import), writes what it holds that its master holds too: sockets
opened before the fork. Records are JSON lines appended to the file ``UWSGIES_DOCTOR_REPORT`` names
(``UWSGIES_DOCTOR_LOG`` names uWSGI's log).

Nothing happens unless the first variable is set: importing this module elsewhere is harmless.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from uwsgi_es.doctor.logs import configuration
from uwsgi_es.doctor.observed import mule_kind
from uwsgi_es.doctor.sockets import inet_sockets, socket_inodes, thread_count
from uwsgi_es.lifecycle.registry import BUILD_EVENT
from uwsgi_es.runtime import process

REPORT_VARIABLE = "UWSGIES_DOCTOR_REPORT"  # not UWSGI_*: uWSGI reads those as its options
LOG_VARIABLE = "UWSGIES_DOCTOR_LOG"  # uWSGI's log, which begins with its options (--show-config)
ACCEPTING_RPC = "uwsgi_es_doctor_accepting"
WATCHED = frozenset({"socket.connect", "sqlite3.connect", BUILD_EVENT})
_STDLIB = tuple(dict.fromkeys(sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib")))
_LIBRARIES = _STDLIB + tuple(dict.fromkeys(sysconfig.get_paths()[name] for name in ("purelib", "platlib")))
_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_report_path = os.environ.get(REPORT_VARIABLE)
_master_pid = os.getpid()


def write(record: dict[str, Any]) -> None:
    """Append one record (a single write, so lines from several processes never interleave)."""
    if _report_path is None:
        return
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(_report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def caller(depth: int = 2) -> tuple[str, bool]:
    """Where the application's code asked for it (the innermost frame outside the standard
    library, site-packages and uwsgi_es, else the innermost outside the standard library), and
    whether a module was being imported at the time."""
    frame: FrameType | None = sys._getframe(depth)
    importing, application, library = False, None, None
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<frozen importlib"):
            importing = True
        elif not filename.startswith("<"):
            here = f"{filename}:{frame.f_lineno}"
            in_library = filename.startswith(_LIBRARIES) or filename.startswith(_OURS)
            if application is None and not in_library:
                application = here
            if library is None and not filename.startswith(_STDLIB):
                library = here
        frame = frame.f_back
    return application or library or "?", importing


def audit_record(event: str, arguments: Sequence[Any]) -> dict[str, Any]:
    """The record of one watched audit event, with where the application's code asked for it.
    Called from an audit hook (the caller's frame is two above this one's caller)."""
    where, importing = caller(3)
    record: dict[str, Any] = {"record": event, "where": where, "importing": importing}
    if event == "socket.connect":
        address = arguments[1]
        if isinstance(address, tuple) and len(address) >= 2:
            host = str(address[0])
            address = f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
        record["address"] = str(address)
    elif event == "sqlite3.connect":
        record["database"] = str(arguments[0])
    else:
        record["application"] = str(arguments[0])
    return record


def _audit(event: str, arguments: Sequence[Any]) -> None:
    if event not in WATCHED or os.getpid() != _master_pid:
        return
    try:
        write(audit_record(event, arguments))
    except Exception:  # an audit hook that raises would fail the audited operation
        return


def thread_record() -> dict[str, Any]:
    """The record of the thread calling it (from ``threading.setprofile``, its first step)."""
    thread = threading.current_thread()
    target = getattr(thread, "_target", None)
    code = getattr(target, "__code__", None)
    runs = getattr(target, "__qualname__", type(thread).__qualname__)
    where = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "?"
    return {"record": "thread", "thread": thread.name, "runs": runs, "where": where}


def _thread_started(frame: FrameType, event: str, argument: Any) -> None:
    """``threading.setprofile``: the first thing a new thread does (and then no more)."""
    sys.setprofile(None)
    if os.getpid() != _master_pid:
        return
    try:
        write(thread_record())
    except Exception:
        return


def accepting(*_: Any) -> bytes:
    """In each worker, once it accepts requests: the sockets it shares with its master."""
    master = process.master_pid()
    held_by_master = socket_inodes(master)
    inherited = [
        s.as_dict() for inode, s in inet_sockets().items() if inode in held_by_master and s.connected
    ]
    uwsgi = process.uwsgi
    decorators = sys.modules.get("uwsgidecorators")
    write(
        {
            "record": "worker",
            "worker": process.worker_id(),
            "pid": os.getpid(),
            "master_pid": master,
            "master_threads": thread_count(master),
            "inherited": inherited,
            "postfork_hooks": len(getattr(decorators, "postfork_chain", []) or []),
            "post_fork_hook": getattr(uwsgi, "post_fork_hook", None) is not None,
        }
    )
    return b"ok"  # uWSGI treats an empty answer as a failed hook


def _options() -> dict[str, Any]:
    """The options from the top of uWSGI's log (every value of a repeated option: two `mule`
    lines are two mules), else from ``uwsgi.opt`` (which keeps only the last value of each)."""
    try:
        with open(os.environ[LOG_VARIABLE], errors="replace") as log:
            printed, _ = configuration(log.read().splitlines())
    except (KeyError, OSError):
        printed = {}
    if printed:
        return dict(printed)
    uwsgi = process.uwsgi
    options: dict[str, Any] = {}
    for name, value in uwsgi.opt.items() if uwsgi is not None else ():
        values = value if isinstance(value, list) else [value]
        options[name] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values]
    return options


def _look_at_mule(value: str) -> dict[str, str]:
    """Why uWSGI could not start the mule ``value`` ("missing" empty when it can, as far as the
    master can tell: a module:function's function is only found by importing its module)."""
    kind, missing = mule_kind(value), ""
    if kind == "script" and not os.path.isfile(value):
        missing = f"no file {os.path.abspath(value)}"
    elif kind == "function" and not _findable(value.split(":", 1)[0]):
        missing = f"no module {value.split(':', 1)[0]} on the master's sys.path (from {os.getcwd()})"
    return {"mule": value, "kind": kind, "missing": missing}


def _findable(module: str) -> bool:
    """Whether ``module`` can be imported, found package by package without importing them:
    ``importlib.util.find_spec("a.b")`` would run ``a/__init__.py`` in the master under watch."""
    names = module.split(".")
    try:
        spec = importlib.util.find_spec(names[0])
        for depth in range(2, len(names) + 1):
            if spec is None or spec.submodule_search_locations is None:
                return False
            name = ".".join(names[:depth])
            spec = importlib.machinery.PathFinder.find_spec(name, list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return False
    return spec is not None


def _start() -> None:
    if _report_path is None or process.uwsgi is None:
        return
    environment = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("UWSGI_ES_", "POSTGRES_", "PERSISTENCE_")) or "AGGREGATE_CACHE_" in k
    }
    options = _options()
    mules = ["" if value is True else str(value) for value in options.get("mule", [])]
    write(
        {
            "record": "master",
            "pid": _master_pid,
            "python": list(sys.version_info[:3]),
            "options": options,
            "environment": environment,
            "mules": [_look_at_mule(mule) for mule in mules],
        }
    )
    sys.addaudithook(_audit)
    threading.setprofile(_thread_started)
    process.uwsgi.register_rpc(ACCEPTING_RPC, accepting)


_start()
