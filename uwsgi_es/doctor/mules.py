"""The mules (``mule = ...``): what stops uWSGI from starting one, and the crash loop that follows.

A dead mule is respawned about once a second, forever, while the workers serve as if nothing
happened: nothing but the log shows it. So each rule names the mule line, what the master saw (the
probe looked for its script or module) or the log's crash lines, and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator

from uwsgi_es.doctor.logs import first_exception, mule_crash_lines, mule_respawns
from uwsgi_es.doctor.observed import Finding, Observed
from uwsgi_es.runtime.process import runs_projections

OUTSIDE_UWSGI = "run the projections outside uWSGI instead: `uwsgi-es project NAME` (systemd, a container)"


def fork_hooks_with_mules(seen: Observed) -> Iterator[Finding]:
    """uWSGI 2.0 forks mules without the fork hooks: the mule then runs Python without the GIL."""
    if not seen.enabled("py-call-uwsgi-fork-hooks") or not (seen.mules or seen.enabled("mules")):
        return
    yield Finding(
        True,
        "py-call-uwsgi-fork-hooks with a mule: the mule crashes at every respawn",
        "uWSGI 2.0 forks its mules without the fork hooks, so a mule runs Python without holding the "
        "GIL and segfaults as it starts (any mule: a script, a module:function or a bare one), then is "
        f"respawned, about once a second: {_lines(seen)}{_evidence(seen, range(1, len(seen.mules) + 1))}",
        "drop `py-call-uwsgi-fork-hooks` (start the master's threads after the fork instead), or drop "
        f"the mule and {OUTSIDE_UWSGI}",
    )


def function_mule_under_lazy_apps(seen: Observed) -> Iterator[Finding]:
    functions = [n for n, m in enumerate(seen.mules, 1) if m["kind"] == "function"]
    if seen.enabled("lazy-apps", "lazy") and functions:
        first = seen.mules[functions[0] - 1]["mule"]
        yield Finding(
            True,
            "a module:function mule under lazy-apps",
            f"uWSGI cannot start `mule = {first}` under lazy-apps: the mule segfaults before any Python "
            f"runs, at every respawn (unbit/uwsgi#1746){_evidence(seen, functions)}",
            "give the mule a script instead; for uwsgi_es's projection runner: mule = %b-es-mule.py "
            "(the script pip installs beside the uwsgi binary)",
        )


def mules_that_cannot_start(seen: Observed) -> Iterator[Finding]:
    """A script that is not there, a module that is not on the path, or a mule that died during
    the boot for a reason no other rule names."""
    respawns = mule_respawns(seen.log)
    for number, mule in enumerate(seen.mules, 1):
        line = f"`mule = {mule['mule']}` (mule {number})"
        if mule["missing"]:
            yield Finding(
                True,
                f"a mule that cannot start: {line}",
                f"{mule['missing']}: uWSGI starts the mule, which fails at once and is respawned, about "
                f"once a second{_evidence(seen, [number])}",
                _missing_fix(mule),
            )
        elif respawns.get(number) and not _explained(seen, mule):
            error = first_exception(seen.log)
            yield Finding(
                True,
                f"a mule died during the boot: {line}",
                f"uWSGI respawned it, and it died again: a crash loop{_evidence(seen, [number])}"
                + (f"; the log's first Python exception: {error!r}" if error else ""),
                "run it by hand to see why (a script: python SCRIPT; uwsgi_es's projections: "
                "`uwsgi-es project NAME`), or read uWSGI's log before each 'crippled'",
            )


def _explained(seen: Observed, mule: dict[str, str]) -> bool:
    """Whether a rule above already says why this mule dies."""
    lazy_function = seen.enabled("lazy-apps", "lazy") and mule["kind"] == "function"
    return seen.enabled("py-call-uwsgi-fork-hooks") or lazy_function


def _missing_fix(mule: dict[str, str]) -> str:
    if runs_projections(mule["mule"]):
        return (
            "install uwsgi_es into the virtualenv of this uwsgi (pip puts uwsgi-es-mule.py beside the "
            "uwsgi binary, which `mule = %b-es-mule.py` names), or correct the path"
        )
    if mule["kind"] == "function":
        return "make the module importable from the ini's chdir (add `pythonpath = ...`), or correct the name"
    return "correct the path: a relative one is read from the ini's chdir"


def _lines(seen: Observed) -> str:
    lines = [f"`mule = {mule['mule']}`" for mule in seen.mules]
    return ", ".join(lines + ([f"`mules = {seen.first('mules')}`"] if seen.enabled("mules") else []))


def _evidence(seen: Observed, mules: range | list[int]) -> str:
    """What the log shows of these mules in the boot: how often each died, and its first crash line."""
    respawns = mule_respawns(seen.log)
    died = [n for n in mules if respawns.get(n)]
    if not died:
        return ""
    counts = ", ".join(f"mule {n} {respawns[n]} time(s)" for n in died)
    first = next((lines[0] for n in died if (lines := mule_crash_lines(seen.log, n))), "")
    return f"; in this boot it died: {counts}" + (f", the log says {first.strip()!r}" if first else "")
