"""The supported Pythons, found on this machine: for `make interpreters` (the fork, mule and
lifecycle tests on each) and the wheel tests, which install uwsgi_es on each.

    python3 tests/support/interpreters.py 3.12     # prints the interpreter's path, or fails saying why

Looked for in order: ``ES_TEST_PYTHON_3_12`` (a path), pyenv's newest 3.12.x, ``python3.12`` on
PATH. Never skipped: a supported Python that is missing fails the run, with what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SUPPORTED = ("3.11", "3.12", "3.13")  # pyproject.toml's requires-python and classifiers say the same


class MissingInterpreterError(RuntimeError):
    """A supported Python is not on this machine."""


def find(version: str) -> Path:
    """The path of a Python ``version`` (e.g. "3.12")."""
    variable = f"ES_TEST_PYTHON_{version.replace('.', '_')}"
    if os.environ.get(variable):
        return Path(os.environ[variable])
    for candidate in (*_pyenv(version), shutil.which(f"python{version}")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise MissingInterpreterError(
        f"Python {version} is not installed here: install it (`pyenv install {version}`, or your "
        f"distribution's python{version} with its venv module and headers, which uWSGI compiles "
        f"against), or set {variable} to its path."
    )


def _pyenv(version: str) -> list[str]:
    """pyenv's installed versions X.Y.Z of ``version``, newest first."""
    if shutil.which("pyenv") is None:
        return []
    listed = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False)
    found = [v for v in listed.stdout.split() if re.fullmatch(rf"{re.escape(version)}\.\d+", v)]
    found.sort(key=lambda v: int(v.rsplit(".", 1)[1]), reverse=True)
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False).stdout.strip()
    return [str(Path(root) / "versions" / v / "bin" / f"python{version}") for v in found]


if __name__ == "__main__":
    try:
        print(find(sys.argv[1]))
    except MissingInterpreterError as exc:
        print(f"make: {exc}", file=sys.stderr)
        sys.exit(1)
