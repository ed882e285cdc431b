"""The queue SQLite writers of one host wait in, with a bound on the wait.

SQLite's busy handler polls a held write lock with sleeps of 1, 2, 5, 10... ms, so two workers
writing at once lose milliseconds per collision. Holding ``flock`` on a file beside the database for
the (short) write transaction makes a waiting writer take the lock the moment it is released, at a
cost of one system call when nobody holds it. A thread lock orders the threads of one process
(flock is per open file, shared by threads).

No wait is unbounded: a writer gives up after ``timeout`` seconds (the SQLite busy timeout) with
``StoreBusyError``, however many writers queue before it or however long one of them holds the
lock. While the lock is taken, a waiter polls it with sleeps of at most 1 ms. Within a request the
wait is also capped at what is left of its deadline (``uwsgi_es.stores.deadlines``), and under
gevent cut into slices that the store tries again after a yield.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time

from uwsgi_es.errors import StoreBusyError, StoreUnavailableError
from uwsgi_es.stores import deadlines

_MAX_POLL = 0.001


class WriterQueue:
    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._threads = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> None:
        limit = max(0.0, deadlines.wait_limit(self.timeout))
        deadline = time.monotonic() + limit
        if not self._threads.acquire(timeout=limit):
            raise self._busy()
        try:
            fd = self._open()
            pause = 0.00005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
                if time.monotonic() >= deadline:
                    raise self._busy()
                time.sleep(pause)
                pause = min(_MAX_POLL, pause * 2)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                reason = "read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "unusable"
                raise StoreUnavailableError(
                    f"The SQLite writers' lock file {self.path} cannot be opened ({exc.strerror}): its "
                    f"folder is {reason} for this process. uwsgi_es keeps it beside the database; let "
                    "the user uWSGI runs as write there."
                ) from exc
        return self._fd

    def _busy(self) -> StoreBusyError:
        return StoreBusyError(
            f"Waited for the SQLite write lock ({self.path}) until this request's bound "
            f"({self.timeout:g}s from its arrival) and gave up: another writer held it. Nothing was "
            "stored. The bound is UWSGI_ES_SQLITE_BUSY_TIMEOUT_MS."
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
