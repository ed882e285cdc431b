"""What the doctor saw, and the shape of what it concludes: the probe's records
(``uwsgi_es.doctor.probe``) sorted by kind, with uWSGI's own log of the boot; every rule is a
function of one ``Observed`` that yields ``Finding``s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    problem: bool  # else a note: what was checked and passed
    title: str
    detail: str
    fix: str = ""


@dataclass
class Observed:
    """Everything the probe wrote, sorted by kind, and the log uWSGI wrote until the doctor stopped it."""

    options: dict[str, list[Any]]  # as uWSGI resolved them: %d, %b, $(VAR) already substituted
    environment: dict[str, str]
    events: list[dict[str, Any]]  # audit records from the master
    workers: list[dict[str, Any]]  # one per worker that reached the accepting phase
    python: tuple[int, ...] = ()  # the version of the Python uWSGI runs; () before the master wrote
    mules: list[dict[str, str]] = field(default_factory=list)  # each `mule =` line, mule 1 first
    log: list[str] = field(default_factory=list)
    server: str = ""  # the program of a server other than uWSGI (granian, gunicorn, uvicorn), else ""

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], log: Iterable[str] = ()) -> Observed:
        observed = cls({}, {}, [], [], log=list(log))
        for record in records:
            if record.get("record") == "master":
                observed.options, observed.environment = record["options"], record["environment"]
                observed.python = tuple(record.get("python", ()))
                observed.mules = record.get("mules", [])
                observed.server = os.path.basename(str((record.get("command") or [""])[0]))
            elif record.get("record") == "worker":
                observed.workers.append(record)
            else:
                observed.events.append(record)
        return observed

    def enabled(self, *names: str) -> bool:
        """Whether any of these uWSGI options is set to something true."""
        for name in names:
            for value in self.options.get(name, []):
                if value is True or str(value).strip().lower() not in ("", "0", "false", "no", "off"):
                    return True
        return False

    def first(self, name: str) -> str | None:
        values = self.options.get(name)
        return str(values[-1]) if values else None

    @property
    def parent(self) -> str:
        """What the process that forks the workers is called: uWSGI's master, another server's parent."""
        return "parent" if self.server else "master"

    @property
    def processes(self) -> int:
        raw = self.first("processes") or self.first("workers") or "1"
        return int(raw) if raw.isdigit() else 1

    @property
    def accepting(self) -> set[int]:
        """The ids of the workers that reached the accepting phase."""
        return {int(w["worker"]) for w in self.workers}

    @property
    def python_version(self) -> str:
        return ".".join(map(str, self.python)) or "?"


def mule_kind(value: str) -> str:
    """What uWSGI's Python plugin makes of a `mule = ...` value: a ``script`` (a name ending in .py,
    run as __main__), a ``function`` (``module:function``, imported and called), else a ``plain``
    mule that only waits for signals."""
    if value.endswith(".py"):
        return "script"
    return "function" if ":" in value else "plain"


def listed(numbers: Iterable[int]) -> str:
    """``[2, 1, 2]`` -> ``"1, 2"``."""
    return ", ".join(str(n) for n in sorted(set(numbers)))


def lazy(seen: Observed, workers: int) -> bool:
    """Whether the workers build on their first request (a WSGI interface, no lifespan): the parent
    loaded the target (gunicorn's --preload: its workers are forks of it), or ``workers`` did."""
    declared = [e for e in seen.events if e["record"] == "declared" and not e["lifespan"]]
    return any(e["parent"] for e in declared) or len({e["pid"] for e in declared}) >= workers
