"""The ini's options, as uWSGI resolved them: the ones that break a forking deployment, the fork
option that is fatal on a Python, and ``$(VAR)`` placeholders left unset."""

from __future__ import annotations

import re
from collections.abc import Iterator

from uwsgi_es.doctor.observed import Finding, Observed, listed

FATAL_FROM = (3, 13)  # py-call-osafterfork aborts every forked process from this Python on
PLACEHOLDER = re.compile(r"\$\((\w+)\)")


def risky_options(seen: Observed) -> Iterator[Finding]:
    if seen.first("wsgi-file") or seen.first("file"):
        yield Finding(
            True,
            "the application is loaded with wsgi-file",
            f"uWSGI runs {seen.first('wsgi-file') or seen.first('file')} under a made-up module name "
            "(uwsgi_file_...): classes defined there carry that name into pickles and into the topics "
            "of stored events, which nothing outside this uWSGI can import",
            "module = package.module:application (the file's import path)",
        )
    if not seen.enabled("master"):
        yield Finding(
            True,
            "no master process",
            "without the master nothing respawns a dead worker, and post-fork hooks, mules, "
            "graceful reloads and the sharedarea of /metrics all need it",
            "master = true",
        )
    if not seen.enabled("die-on-term"):
        yield Finding(
            True,
            "SIGTERM reloads uWSGI instead of stopping it",
            "uWSGI 2.0 takes SIGTERM as 'reload': systemd, Docker and Kubernetes stop with SIGTERM, "
            "wait, then SIGKILL, cutting the requests in flight",
            "die-on-term = true",
        )
    if not seen.enabled("need-app"):
        yield Finding(
            True,
            "uWSGI serves without an application when the import fails",
            "every request then answers 'Internal Server Error' from uWSGI itself, and the instance "
            "looks alive to a supervisor",
            "need-app = true",
        )
    hooked = [w["worker"] for w in seen.workers if w.get("postfork_hooks") or w.get("post_fork_hook")]
    if seen.enabled("lazy-apps", "lazy") and hooked:
        yield Finding(
            True,
            "post-fork hooks under lazy-apps never run",
            f"with lazy-apps each worker imports the application after its fork, so the post-fork "
            f"hooks registered at import (seen in workers {listed(hooked)}) have no fork left to follow: "
            "what they would build is never built",
            "build at import under lazy-apps (uwsgi_es.install() notices and does), or drop lazy-apps",
        )


def osafterfork(seen: Observed) -> Iterator[Finding]:
    """Fatal from Python 3.13 (unbit/uwsgi#2710), and never needed by uwsgi_es: a problem on every
    Python, since the same ini outlives the interpreter it was checked on."""
    if not seen.enabled("py-call-osafterfork"):
        return
    fix = (
        "remove `py-call-osafterfork`: uwsgi_es needs no fork option (it builds everything after the "
        "fork); a master that must run threads before the fork wants `py-call-uwsgi-fork-hooks = true` "
        "instead, and no mule"
    )
    if seen.python >= FATAL_FROM:
        yield Finding(
            True,
            f"py-call-osafterfork aborts every worker and mule on Python {seen.python_version}",
            "uWSGI 2.0 calls PyOS_AfterFork_Child in each forked process, which Python 3.13 aborts on "
            "('Fatal Python error: _PyRecursiveMutex_Unlock', unbit/uwsgi#2710); uWSGI respawns them, "
            "forever, and nothing serves",
            fix,
        )
    else:
        yield Finding(
            True,
            "py-call-osafterfork aborts every worker and mule from Python 3.13",
            f"harmless on the Python {seen.python_version} running here, but the same ini under Python "
            "3.13 serves nothing: each forked process aborts with 'Fatal Python error: "
            "_PyRecursiveMutex_Unlock' (unbit/uwsgi#2710)",
            fix,
        )


def unset_variables(seen: Observed) -> Iterator[Finding]:
    """uWSGI keeps the text ``$(VAR)`` when VAR is unset (``http-socket = $(VAR)`` then binds a
    UNIX socket file of that name)."""
    options: dict[str, list[str]] = {}
    for name, values in seen.options.items():
        for value in values:
            for variable in PLACEHOLDER.findall(str(value)):
                options.setdefault(variable, []).append(f"`{name} = {value}`")
    for variable, where in sorted(options.items()):
        yield Finding(
            True,
            f"the environment variable {variable} is not set",
            f"uWSGI kept the text $({variable}) in {', '.join(where)}",
            f"export {variable}=... or remove it from the ini",
        )
