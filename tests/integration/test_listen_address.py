"""UWSGI_ES_HTTP, which uwsgi.ini binds, is checked when uwsgi_es starts in the master: uWSGI alone
takes a value without a port for a unix socket file (in the ini's folder) and a port past 65535
modulo 65536, and then serves nobody, silently."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from uwsgi_es.testing import free_port
from uwsgi_es.testing.uwsgi_server import find_uwsgi

from ..support.paths import INI

pytestmark = pytest.mark.integration


def start(ini: Path, env: dict[str, str]) -> tuple[int | None, str]:
    """uWSGI's exit code (None if it was still running after 30 s, then stopped) and its log."""
    log = ini.parent / "uwsgi.log"
    with log.open("wb") as output:
        instance = subprocess.Popen(
            [find_uwsgi(), "--ini", str(ini)],
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code: int | None = instance.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(instance.pid, signal.SIGKILL)
            instance.wait()
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize("address", ["not-an-address", "127.0.0.1:99999", "127.0.0.1:0", "x.sock"])
def test_an_address_that_is_not_host_and_port_stops_the_start(
    tmp_path: Path, sqlite_url: str, address: str
) -> None:
    """uwsgi.ini (a copy, so its folder is the test's) with such an UWSGI_ES_HTTP: the instance
    stops at once with uWSGI's failed-app code and one line naming the variable, the value and the
    accepted form; no socket file is left in the ini's folder."""
    ini = tmp_path / "uwsgi.ini"
    shutil.copy(INI, ini)
    before = set(os.listdir(tmp_path))
    code, log = start(ini, {"UWSGI_ES_DATABASE_URL": sqlite_url, "UWSGI_ES_HTTP": address})
    assert code == 22, log[-3000:]
    line = f"uwsgi_es: cannot start: UWSGI_ES_HTTP='{address}' is not an address to listen on: use host:port"
    assert line in log, log[-3000:]
    assert "Traceback" not in log
    left = set(os.listdir(tmp_path)) - before - {"uwsgi.log", "var"}
    assert left == set(), left
    assert not (tmp_path / address).exists()


def test_a_valid_address_still_serves(tmp_path: Path, sqlite_url: str) -> None:
    """host:port, as the harness and every shipped ini give it, starts and answers."""
    from uwsgi_es.testing import UwsgiServer

    with UwsgiServer(INI, env={"UWSGI_ES_DATABASE_URL": sqlite_url}, options=["--processes", "1"]) as server:
        assert server.address.startswith("127.0.0.1:")
        assert server.get("/health").status == 200
    assert free_port() > 0
