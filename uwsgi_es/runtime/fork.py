"""The one fork guard: what a process built (an application, a store, a driver's session) is used
only in that process.

A forked child inherits its parent's sockets, pools and driver threads; using them from both sides
interleaves two conversations on one connection (corrupted answers, timeouts). Every holder of
connections records the pid it was built in and asks ``refuse_if_forked`` before each use, and
``inherited`` when it closes (a child only forgets what it inherited, never closes the parent's).
"""

from __future__ import annotations

import os

from uwsgi_es.errors import ForkedApplicationError


def inherited(built_in_pid: int) -> bool:
    """Whether something built in process ``built_in_pid`` is now in a forked child of it."""
    return os.getpid() != built_in_pid


def refuse_if_forked(what: str, built_in_pid: int) -> None:
    """Raise ``ForkedApplicationError`` (one wording for every holder) if ``what``, built in
    process ``built_in_pid``, is used in another process."""
    pid = os.getpid()
    if pid != built_in_pid:
        raise ForkedApplicationError(
            f"{what} was built in process {built_in_pid} and is used in process {pid}, a forked "
            "child: its connections belong to the parent, and using them here corrupts both. Build "
            "the application after the fork, once in each process: uwsgi_es.install(YourApp) under "
            "uWSGI, or init_application() in your server's post-fork hook."
        )
