"""An ini file as uWSGI reads it, for the deployment steps that must find what uWSGI will serve
(``uwsgi-es migrate --ini``, ``check``, ``project``, ``init``) without starting it.

uWSGI's ini language has includes (``ini = other.ini:section``), magic (``%d``, ``%b``...),
placeholders, ``$(VAR)`` and conditionals: rather than parse it a second time, differently, this
asks the uwsgi binary beside this Python to read the file and print the options it resolved
(``--show-config``), then stop before it binds a socket or imports anything: ``--clock`` with a
name no clock has makes uWSGI 2.0 exit right after printing the configuration. Nothing here imports
``uwsgi`` (it runs outside uWSGI) nor connects to anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from uwsgi_es.errors import ConfigurationError

_NO_SUCH_CLOCK = "uwsgi-es-only-reads-the-config"
_BEGIN, _END = ";uWSGI instance configuration", ";end of configuration"
# What uWSGI says around a refusal that is not the reason (the reason is its `print` line or error).
_NOISE = ("[uWSGI] getting", 'running "', "local rpc subsystem", "unable to set")


def find_uwsgi() -> str:
    """The uwsgi binary of this Python's environment (pip's ``uwsgi`` package), else on PATH."""
    found = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or shutil.which("uwsgi")
    if found is None:
        raise ConfigurationError("uWSGI is not installed in this environment: pip install uwsgi")
    return found


@dataclass(frozen=True)
class Ini:
    """The options of one ini file as uWSGI resolved them (each option: its values, in order)."""

    path: Path
    options: dict[str, list[str]]

    def last(self, name: str) -> str | None:
        values = self.options.get(name)
        return values[-1] if values else None

    @property
    def module(self) -> str | None:
        """The WSGI module uWSGI imports (``module = pkg.mod:callable``, or ``wsgi = ...``)."""
        return self.last("module") or self.last("wsgi")

    @property
    def chdir(self) -> Path:
        """The directory uWSGI works in (and resolves relative SQLite paths from)."""
        return Path(self.last("chdir") or os.getcwd())

    @property
    def pythonpath(self) -> list[str]:
        return self.options.get("pythonpath", []) + self.options.get("python-path", [])

    @property
    def environment(self) -> dict[str, str]:
        """What the ini's ``env = NAME=value`` lines put in the environment."""
        pairs = (value.partition("=") for value in self.options.get("env", []))
        return {name: value for name, _, value in pairs if name}

    @property
    def mules(self) -> list[str]:
        return self.options.get("mule", [])


def read_ini(path: str | os.PathLike[str]) -> Ini:
    """Ask uWSGI for the options ``path`` resolves to, in this process's environment."""
    ini = Path(path)
    if not ini.is_file():
        raise ConfigurationError(f"No ini file at {ini}: give the file uWSGI runs (uwsgi --ini FILE).")
    command = [find_uwsgi(), "--ini", str(ini.resolve()), "--show-config", "--clock", _NO_SUCH_CLOCK]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    options, rest = shown_options((done.stdout + done.stderr).splitlines())
    if not options:
        said = [line for line in rest if line.strip() and not line.startswith(_NOISE)]
        reason = "; ".join(said[-3:]) or f"exit code {done.returncode}"
        raise ConfigurationError(f"uWSGI refused {ini} before reading it through: {reason}")
    return Ini(ini, options)


def shown_options(log: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The options uWSGI printed for ``--show-config`` (resolved, and every value of a repeated
    option, where ``uwsgi.opt`` keeps only the last), and the log without them (an ``env = ...``
    line may hold a secret: nothing quotes them)."""
    try:
        start = log.index(_BEGIN)
        end = log.index(_END, start)
    except ValueError:
        return {}, log
    options: dict[str, list[str]] = {}
    for line in log[start + 1 : end]:
        name, equals, value = line.partition(" = ")
        if equals:
            options.setdefault(name.strip(), []).append(value)
    return options, log[:start] + log[end + 1 :]
