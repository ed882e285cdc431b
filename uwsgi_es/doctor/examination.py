"""``uwsgi-es doctor INI``: boot the ini under a real uWSGI the way production would, with the
probe added (``uwsgi_es.doctor.probe``), wait until every worker accepts requests (and a few
seconds more when there are mules, so that a crash loop shows in the log), stop it, and judge what
was seen and logged until then (``uwsgi_es.doctor.findings``, ``uwsgi_es.doctor.budget``). An
instance that does not boot is judged too, on what its master wrote and its log.

The instance binds the ini's own sockets: run the doctor where they are free (for uwsgi.ini,
``UWSGI_ES_HTTP`` picks the address). It gets the doctor's environment, as systemd's
``Environment=`` would give it. It must run in the foreground, in the doctor's process group, to be
watched and stopped: an ini that daemonizes (``daemonize``, ``daemonize2``; uWSGI has no option to
undo them) is refused before anything starts; should one daemonize anyway (an option the doctor
could not see, e.g. from ``UWSGI_INI``), every process still carrying this run's report variable is
stopped too, so the doctor never leaves an instance running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwsgi_es.doctor.budget import connection_budget
from uwsgi_es.doctor.findings import diagnose
from uwsgi_es.doctor.logs import configuration, worker_deaths
from uwsgi_es.doctor.observed import Finding, Observed, lazy
from uwsgi_es.doctor.probe import ACCEPTING_RPC, LOG_VARIABLE, REPORT_VARIABLE
from uwsgi_es.errors import ConfigurationError
from uwsgi_es.servers.uwsgi_ini import find_uwsgi

SETTLE_SECONDS = 0.5  # a thread started in the master may write its record late
MULE_WATCH_SECONDS = 3.0  # uWSGI reaps a dead mule about once a second: two or three deaths show
STRAGGLER_SECONDS = 10.0  # a prefork worker not accepting this long after its spawn hangs
STOP_SECONDS = 5.0  # after SIGINT, before SIGKILL (a hung worker never exits by itself)
_DAEMONIZE = re.compile(r"^\s*(daemonize2?)\s*=\s*(.*?)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^\s*ini\s*=\s*(\S+)\s*$", re.MULTILINE)


@dataclass
class Examination:
    ini: Path
    booted: bool  # every worker reached the accepting phase
    seconds: float  # until it booted, or the doctor gave up on it
    exit_code: int | None  # uWSGI's, when it stopped by itself
    log_tail: str
    findings: list[Finding] = field(default_factory=list)
    server: str = "uWSGI"

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.problem]

    def report(self) -> str:
        ready = "accepted requests" if self.server == "uWSGI" else "built their applications"
        if self.booted:
            head = (
                f"uwsgi-es doctor {self.ini}: booted {self.server} in {self.seconds:.1f}s, looked, stopped it"
            )
        elif self.exit_code is not None:
            head = (
                f"uwsgi-es doctor {self.ini}: {self.server} stopped by itself (exit code {self.exit_code}) "
                f"before its workers {ready}"
            )
        else:
            head = (
                f"uwsgi-es doctor {self.ini}: {self.server}'s workers had not all {ready} in "
                f"{self.seconds:.1f}s; looked, stopped it"
            )
        lines = [head, ""]
        for finding in self.findings:
            lines.append(f"{'PROBLEM' if finding.problem else 'ok'}: {finding.title}")
            if finding.detail:
                lines.append(f"    {finding.detail}")
            if finding.fix:
                lines.append(f"    fix: {finding.fix}")
        if not self.booted:
            lines += ["", f"--- the end of {self.server}'s log ---", self.log_tail]
        count = len(self.problems) or (0 if self.booted else 1)  # not booting is one, if nothing says why
        lines += ["", f"{count} problem(s)" if count else "no problems found"]
        return "\n".join(lines)

    @property
    def status(self) -> int:
        """0: clean; 1: problems; 2: the instance did not boot."""
        if not self.booted:
            return 2
        return 1 if self.problems else 0


def examine(ini: str | os.PathLike[str], *, timeout: float = 60.0) -> Examination:
    """Boot ``ini``, look, stop, judge."""
    path = Path(ini)
    if not path.is_file():
        raise ConfigurationError(f"no ini file at {path}")
    _refuse_to_daemonize(path)
    with tempfile.TemporaryDirectory(prefix="uwsgi-es-doctor-") as scratch:
        report, log = Path(scratch) / "report.jsonl", Path(scratch) / "uwsgi.log"
        command = [
            find_uwsgi(),
            "--ini",
            str(path),
            "--shared-import",
            "uwsgi_es.doctor.probe",
            "--hook-accepting",
            f"rpc:{ACCEPTING_RPC}",
            "--show-config",
        ]
        env = {**os.environ, REPORT_VARIABLE: str(report), LOG_VARIABLE: str(log)}
        started = time.monotonic()
        with log.open("wb") as output:
            instance = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                booted, seconds = _wait_for_workers(instance, report, log, started, timeout)
                seen = _look(report, log)  # before the stop: what stopping logs is no finding
            finally:
                exit_code = instance.poll()
                _stop(instance)
                leftovers = _stop_leftovers(report, instance.pid)
        if leftovers or (exit_code == 0 and not booted):  # uWSGI exits 0 early only when it detaches
            stopped = f"; the doctor stopped its processes {leftovers}" if leftovers else ""
            raise ConfigurationError(_daemonizing(path, f"its master detached from the doctor{stopped}"))
        tail = "\n".join(_log_lines(log)[-40:])
    findings = diagnose(seen) + (list(connection_budget(seen)) if seen.options else [])
    return Examination(path, booted, seconds, exit_code, tail, findings)


def examine_command(command: Sequence[str], *, timeout: float = 60.0) -> Examination:
    """Run another server's command line (granian, gunicorn, uvicorn ...) with the server probe
    (``uwsgi_es.doctor.server_probe``, loaded through a ``sitecustomize`` first on ``PYTHONPATH``),
    wait until as many processes as its ``--workers`` (``-w``) built their application, stop it,
    judge. The command must stay in the foreground (no ``--daemon``)."""
    if not command:
        raise ConfigurationError("name an ini, or a server's command line after --")
    if shutil.which(command[0]) is None:
        raise ConfigurationError(f"no program {command[0]!r} on PATH")
    workers = workers_of(command)
    with tempfile.TemporaryDirectory(prefix="uwsgi-es-doctor-") as scratch:
        report, log = Path(scratch) / "report.jsonl", Path(scratch) / "server.log"
        (Path(scratch) / "sitecustomize.py").write_text(
            "import uwsgi_es.doctor.server_probe  # uwsgi-es doctor\n"
        )
        path = os.pathsep.join(filter(None, [scratch, os.environ.get("PYTHONPATH", "")]))
        env = {**os.environ, REPORT_VARIABLE: str(report), "PYTHONPATH": path}
        started = time.monotonic()
        booted = False
        with log.open("wb") as output:
            instance = subprocess.Popen(
                list(command), stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                while time.monotonic() < started + timeout and instance.poll() is None:
                    seen = _look(report, log, options=False)
                    if len(seen.workers) >= workers or lazy(seen, workers):
                        booted = True
                        time.sleep(SETTLE_SECONDS)
                        break
                    time.sleep(0.1)
                seconds = time.monotonic() - started
                seen = _look(report, log, options=False)
            finally:
                exit_code = instance.poll()
                _stop(instance)
        tail = "\n".join(_log_lines(log, options=False)[-40:])
    threads = max([int(worker.get("threads", 1)) for worker in seen.workers] + [1])
    seen.options = {"workers": [str(workers)], "threads": [str(threads)]}
    seen.server = seen.server or os.path.basename(command[0])
    findings = diagnose(seen) + list(connection_budget(seen))
    return Examination(Path(" ".join(command)), booted, seconds, exit_code, tail, findings, seen.server)


def workers_of(command: Sequence[str]) -> int:
    """The worker processes a command line asks for: ``--workers N``, ``--workers=N`` or ``-w N``
    (granian, uvicorn and gunicorn spell it so), else 1."""
    for index, word in enumerate(command):
        value = None
        if word in ("--workers", "-w") and index + 1 < len(command):
            value = command[index + 1]
        elif word.startswith("--workers="):
            value = word.split("=", 1)[1]
        if value is not None and value.isdigit():
            return int(value)
    return 1


def _daemonizing(ini: Path, how: str) -> str:
    return (
        f"{ini} daemonizes uWSGI ({how}): the doctor must run the instance in the foreground to "
        "watch it and stop it, and uWSGI has no option to undo that. Run the doctor on a copy of "
        "the ini without that line (under systemd or an Emperor uWSGI runs in the foreground anyway)."
    )


def _refuse_to_daemonize(ini: Path) -> None:
    """Refuse an ini (or one it includes, or the environment) that sets ``daemonize(2)``."""
    for name in ("UWSGI_DAEMONIZE", "UWSGI_DAEMONIZE2"):
        if os.environ.get(name):
            raise ConfigurationError(_daemonizing(ini, f"the environment sets {name}"))
    seen: set[Path] = set()
    pending = [ini.resolve()]
    while pending:
        current = pending.pop()
        if current in seen or not current.is_file():
            continue
        seen.add(current)
        text = current.read_text(errors="replace")
        found = _DAEMONIZE.search(text)
        if found is not None:
            where = "" if current == ini.resolve() else f" in {current}"
            raise ConfigurationError(_daemonizing(ini, f"`{found.group(1)} = {found.group(2)}`{where}"))
        for included in _INCLUDE.findall(text):
            name = (
                re.sub(r":[\w-]*$", "", included)
                .replace("%d", f"{current.parent}/")
                .replace("%p", str(current))
            )
            pending.append((current.parent / name).resolve() if name else current)


def _stop_leftovers(report: Path, group: int) -> list[int]:
    """Stop (SIGINT, then SIGKILL) every process this run started that escaped its process group
    ``group`` (already killed): each carries the run's own report path in its environment, even one
    that detached into a session of its own."""
    marker = f"{REPORT_VARIABLE}={report}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                ours = marker in (entry / "environ").read_bytes().split(b"\0")
                if ours and os.getpgid(int(entry.name)) != group:
                    found.append(int(entry.name))
    for sent in (signal.SIGINT, signal.SIGKILL):
        alive = []
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sent)
                alive.append(pid)
        deadline = time.monotonic() + (STOP_SECONDS if sent == signal.SIGINT else 0)
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        if not alive:
            break
    return sorted(found)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[-1][:4]
    return True


def _records(report: Path) -> list[dict[str, Any]]:
    """The probe's records, each ``where`` relative to the current directory when under it."""
    if not report.exists():
        return []
    records = []
    here = os.getcwd() + os.sep
    for line in report.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if str(record.get("where", "")).startswith(here):
                record["where"] = record["where"][len(here) :]
            records.append(record)
    return records


def _look(report: Path, log: Path, *, options: bool = True) -> Observed:
    return Observed.from_records(_records(report), _log_lines(log, options=options))


def _log_lines(log: Path, *, options: bool = True) -> list[str]:
    """The server's log; uWSGI's without the options it printed first."""
    lines = log.read_text(errors="replace").splitlines()
    return configuration(lines)[1] if options else lines


def _wait_for_workers(
    instance: subprocess.Popen[bytes], report: Path, log: Path, started: float, timeout: float
) -> tuple[bool, float]:
    """Whether every worker accepted, and how long that took, or how long until the doctor gave
    up: at the timeout, once as many workers died as there are, or (in prefork mode, where a
    worker has nothing to import) when a worker still does not accept STRAGGLER_SECONDS after the
    first was spawned: it hangs."""
    spawned = None
    while (now := time.monotonic()) < started + timeout and instance.poll() is None:
        seen = _look(report, log)
        if seen.options and len(seen.accepting) >= seen.processes:
            time.sleep(MULE_WATCH_SECONDS if seen.mules else SETTLE_SECONDS)
            return True, now - started
        if spawned is None and any(line.startswith("spawned uWSGI worker") for line in seen.log):
            spawned = now
        hangs = (
            spawned is not None
            and not seen.enabled("lazy-apps", "lazy")
            and now - spawned > STRAGGLER_SECONDS
        )
        if hangs or worker_deaths(seen.log) >= seen.processes:
            time.sleep(SETTLE_SECONDS)
            return False, now - started
        time.sleep(0.1)
    return False, time.monotonic() - started


def _stop(instance: subprocess.Popen[bytes]) -> None:
    """SIGINT (uWSGI stops at once, whatever die-on-term says), then SIGKILL the whole group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(instance.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        instance.wait(timeout=STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(instance.pid, signal.SIGKILL)
    instance.wait()
