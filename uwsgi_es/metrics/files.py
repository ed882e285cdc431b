"""The numbers of every process of a server without uWSGI's sharedarea (uvicorn, granian, gunicorn),
in memory-mapped files of ``UWSGI_ES_METRICS_DIR``: one file per process, the same slot layout as
a sharedarea slot (``table.SlotTable``), so recording costs what it costs under uWSGI.

- A process counts into ``<parent pid>.<pid>.slot`` only (one writer per file: no lock across
  processes); ``/metrics``, in any worker, adds up the files of its own server (same parent pid).
- A worker that dies keeps its file, so its counts stay in the sums (a killed worker loses nothing
  it counted). The next process of that server to start merges the files of its dead siblings into
  ``<parent pid>.retired.slot`` (under a file lock) and removes them: a server that respawns
  workers for ever (``max_requests``) keeps a bounded number of files.
- Files of another run (a parent pid that is gone) are removed by the first process of the next
  one, so the directory needs no wiping between runs (``prometheus_client``'s multiprocess mode
  needs that, and a hook in every server to mark dead processes: this needs neither).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from uwsgi_es.metrics.table import SLOT_BYTES, SlotTable

SUFFIX = ".slot"
RETIRED = "retired"


def own_table(directory: str) -> SlotTable:
    """This process's file-backed slot (made on first use), after tidying its server's directory."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    parent = os.getppid()
    _tidy(folder, parent)
    return _mapped(folder / f"{parent}.{os.getpid()}{SUFFIX}", writable=True)


def server_totals(directory: str) -> tuple[dict[str, float], float]:
    """Every number of this server's processes, summed (their files, live, dead and retired), and
    the numbers they could not keep."""
    totals: dict[str, float] = {}
    dropped = 0.0
    for path in _files(Path(directory), os.getppid()):
        try:
            table = _mapped(path, writable=False)
        except (FileNotFoundError, ValueError):  # merged and removed meanwhile, or still being made
            continue
        for key, value in table.totals().items():
            totals[key] = totals.get(key, 0.0) + value
        dropped += table.dropped()
    return totals, dropped


def _mapped(path: Path, *, writable: bool) -> SlotTable:
    """The slot in the file at ``path`` (made full size first, when writable)."""
    flags = os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY
    descriptor = os.open(path, flags, 0o644)
    try:
        if writable and os.fstat(descriptor).st_size < SLOT_BYTES:
            os.ftruncate(descriptor, SLOT_BYTES)  # zeros: an empty slot
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        area = mmap.mmap(descriptor, SLOT_BYTES, access=access)
    finally:
        os.close(descriptor)  # the mapping outlives the descriptor
    return SlotTable(memoryview(area), 0, 1)


def _files(folder: Path, parent: int) -> Iterator[Path]:
    return iter(sorted(folder.glob(f"{parent}.*{SUFFIX}")))


def _tidy(folder: Path, parent: int) -> None:
    """Merge dead siblings into the retired file; remove the files of runs whose parent is gone."""
    with _locked(folder / f"{parent}.lock"):
        dead = [
            p for p in _files(folder, parent) if _pid_of(p) not in (None, os.getpid()) and _gone(_pid_of(p))
        ]
        if dead:
            retired = _mapped(folder / f"{parent}.{RETIRED}{SUFFIX}", writable=True)
            for path in dead:
                table = _mapped(path, writable=False)
                for key, value in table.totals().items():
                    retired.add(key, value)
                retired.values[1] += table.dropped()  # the header's dropped count (slot 0)
                path.unlink()
    for path in folder.glob(f"*{SUFFIX}"):
        owner = path.name.split(".", 1)[0]
        if owner.isdigit() and int(owner) != parent and _gone(int(owner)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    for path in folder.glob("*.lock"):
        owner = path.name.split(".", 1)[0]
        if owner.isdigit() and int(owner) != parent and _gone(int(owner)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _pid_of(path: Path) -> int | None:
    middle = path.name.split(".")[1]
    return int(middle) if middle.isdigit() else None


def _gone(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
