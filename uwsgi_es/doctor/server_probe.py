"""The doctor's eyes inside a server other than uWSGI (granian, gunicorn, uvicorn). ``uwsgi-es
doctor -- COMMAND`` runs the command with a ``sitecustomize`` module first on ``PYTHONPATH`` that
imports this one, so it loads in the server's first process and in every process that one forks
or spawns (a spawned process gets the same environment).

The first process is the parent: the variable ``UWSGIES_DOCTOR_PARENT`` holds its pid from then
on. There, as ``probe`` does in uWSGI's master, an audit hook (PEP 578) notes every socket
connected, SQLite database opened and uwsgi_es application built, and every Python thread started
but those of the server's own package (granian's watchers of its workers): granian's
``on_startup`` hooks and gunicorn's ``--preload`` import run there. In every other process it
writes a record when uwsgi_es builds an application (in the ASGI lifespan, or on first use): its
pid, and the connections it holds that the parent holds too, opened before its fork; and one when
the worker's target names its application (``install()``, ``asgi()``), saying whether it builds
as it starts (an ASGI lifespan) or on its first request (a WSGI interface). Nothing happens unless
``UWSGIES_DOCTOR_REPORT`` is set.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from uwsgi_es.doctor.probe import REPORT_VARIABLE, WATCHED, audit_record, thread_record, write
from uwsgi_es.doctor.sockets import inet_sockets, socket_inodes
from uwsgi_es.lifecycle.registry import BUILD_EVENT, DECLARE_EVENT
from uwsgi_es.runtime import process

PARENT_VARIABLE = "UWSGIES_DOCTOR_PARENT"
SERVERS = ("granian", "gunicorn", "uvicorn")  # whose own threads in the parent are theirs to mind


def _parent() -> int:
    return int(os.environ.get(PARENT_VARIABLE, "0"))


def _audit(event: str, arguments: Sequence[Any]) -> None:
    if event not in WATCHED and event != DECLARE_EVENT:
        return
    try:
        in_parent = os.getpid() == _parent()
        if event == DECLARE_EVENT:  # the target is loaded; the ASGI host builds in each lifespan
            lifespan = "uwsgi_es.servers.asgi" in sys.modules
            write({"record": "declared", "pid": os.getpid(), "parent": in_parent, "lifespan": lifespan})
        elif in_parent:
            write(audit_record(event, arguments))
        elif event == BUILD_EVENT:
            _built_in_a_worker(str(arguments[0]))
    except Exception:  # an audit hook that raises would fail the audited operation
        return


def _built_in_a_worker(application: str) -> None:
    held_by_parent = socket_inodes(_parent())
    inherited = [
        s.as_dict() for inode, s in inet_sockets().items() if inode in held_by_parent and s.connected
    ]
    write(
        {
            "record": "worker",
            "worker": os.getpid(),
            "pid": os.getpid(),
            "master_pid": _parent(),
            "application": application,
            "inherited": inherited,
            "threads": process.thread_count(),  # requests served at once (the ASGI bridge's pool)
        }
    )


def _thread_started(frame: FrameType, event: str, argument: Any) -> None:
    """``threading.setprofile``: the first thing a new thread of the parent does."""
    sys.setprofile(None)
    if os.getpid() != _parent():
        return
    try:
        record = thread_record()
        servers = (sys.modules.get(name) for name in SERVERS)
        own = tuple(path for server in servers for path in getattr(server, "__path__", ()))
        if not own or not record["where"].startswith(own):  # not the server's own supervision
            write(record)
    except Exception:
        return


def _start() -> None:
    if REPORT_VARIABLE not in os.environ:
        return
    os.environ.setdefault(PARENT_VARIABLE, str(os.getpid()))
    if os.getpid() == _parent():
        environment = {k: v for k, v in os.environ.items() if k.startswith("UWSGI_ES_")}
        write(
            {
                "record": "master",
                "pid": os.getpid(),
                "python": list(sys.version_info[:3]),
                "options": {},
                "environment": environment,
                "mules": [],
                "command": sys.argv,
            }
        )
        threading.setprofile(_thread_started)
    sys.addaudithook(_audit)


_start()
