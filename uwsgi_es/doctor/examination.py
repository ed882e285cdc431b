"""``uwsgi-es doctor INI``: boot the ini under a real uWSGI the way production would, with the
probe added (``uwsgi_es.doctor.probe``), wait until every worker accepts requests, stop it, and
judge what was seen (``uwsgi_es.doctor.findings``, ``uwsgi_es.doctor.budget``).

The instance binds the ini's own sockets: run the doctor where they are free (for uwsgi.ini,
``UWSGI_ES_HTTP`` picks the address). It gets the doctor's environment, as systemd's
``Environment=`` would give it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwsgi_es.doctor.budget import connection_budget
from uwsgi_es.doctor.findings import Finding, Observed, diagnose
from uwsgi_es.doctor.probe import ACCEPTING_RPC, REPORT_VARIABLE
from uwsgi_es.errors import ConfigurationError

SETTLE_SECONDS = 0.5


@dataclass
class Examination:
    ini: Path
    booted: bool  # every worker reached the accepting phase
    seconds: float
    exit_code: int | None  # uWSGI's, when it stopped by itself
    log_tail: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.problem]

    def report(self) -> str:
        if self.exit_code is not None and not self.booted:
            head = (
                f"uwsgi-es doctor {self.ini}: uWSGI stopped by itself (exit code {self.exit_code}) "
                "before its workers accepted requests"
            )
        else:
            head = f"uwsgi-es doctor {self.ini}: booted uWSGI in {self.seconds:.1f}s, looked, stopped it"
        lines = [head, ""]
        for finding in self.findings:
            lines.append(f"{'PROBLEM' if finding.problem else 'ok'}: {finding.title}")
            if finding.detail:
                lines.append(f"    {finding.detail}")
            if finding.fix:
                lines.append(f"    fix: {finding.fix}")
        if not self.booted:
            lines += ["", "--- the end of uWSGI's log ---", self.log_tail]
        count = len(self.problems) + (0 if self.booted else 1)
        lines += ["", f"{count} problem(s)" if count else "no problems found"]
        return "\n".join(lines)

    @property
    def status(self) -> int:
        """0: clean; 1: problems; 2: the instance did not boot."""
        if not self.booted:
            return 2
        return 1 if self.problems else 0


def find_uwsgi() -> str:
    found = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or shutil.which("uwsgi")
    if found is None:
        raise ConfigurationError("uwsgi-es doctor needs uWSGI: pip install uwsgi")
    return found


def examine(ini: str | os.PathLike[str], *, timeout: float = 60.0) -> Examination:
    """Boot ``ini``, look, stop, judge."""
    path = Path(ini)
    if not path.is_file():
        raise ConfigurationError(f"uwsgi-es doctor: no ini file at {path}")
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
        ]
        env = {**os.environ, REPORT_VARIABLE: str(report)}
        started = time.monotonic()
        with log.open("wb") as output:
            instance = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                booted = _wait_for_workers(instance, report, started + timeout)
            finally:
                exit_code = instance.poll()
                _stop(instance)
        seconds = time.monotonic() - started
        seen = Observed.from_records(_records(report))
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    examination = Examination(path, booted, seconds, exit_code, tail)
    if seen.options:
        examination.findings = diagnose(seen) + list(connection_budget(seen))
    return examination


def _records(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    records = []
    for line in report.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def _wait_for_workers(instance: subprocess.Popen[bytes], report: Path, deadline: float) -> bool:
    while time.monotonic() < deadline and instance.poll() is None:
        seen = Observed.from_records(_records(report))
        if seen.options and len({w["worker"] for w in seen.workers}) >= seen.processes:
            time.sleep(SETTLE_SECONDS)  # a thread started in the master may write its record late
            return True
        time.sleep(0.1)
    return False


def _stop(instance: subprocess.Popen[bytes]) -> None:
    """SIGINT (uWSGI stops at once, whatever die-on-term says), then SIGKILL the whole group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(instance.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        instance.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(instance.pid, signal.SIGKILL)
    instance.wait()
