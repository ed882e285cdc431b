"""docs/TUTORIAL.md, run as a user runs it: the wheel built from this checkout (sdist, then the wheel
from the sdist, as `make dist` does), installed by the tutorial's own commands into a fresh
virtualenv in a temporary directory, on each supported Python, with no checkout on any path and the
current directory elsewhere. Every file and command is taken from the tutorial verbatim; the only
change is the port (UWSGI_ES_HTTP, which the ini `uwsgi-es init` writes reads, and the client's
URLs). Then: one application per worker, a read that sees its write, a clean log, in prefork and
lazy-apps."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from uwsgi_es.testing import free_port

from ..support.checks import fan_out
from ..support.interpreters import SUPPORTED, find
from ..support.logs import crashes
from ..support.paths import PROJECT

pytestmark = pytest.mark.integration

TUTORIAL = PROJECT / "docs" / "TUTORIAL.md"
WORKERS = 4
_BLOCK = re.compile(r"<!-- tutorial: (\w+)(?: (\S+))? -->\n```\w*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Step:
    kind: str  # file | run | serve | client
    path: str | None
    text: str


def steps() -> list[Step]:
    return [Step(kind, path, text) for kind, path, text in _BLOCK.findall(TUTORIAL.read_text())]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make dist`'s wheel: the sdist of this checkout, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(PROJECT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [found] = out.glob("uwsgi_es-*.whl")
    assert list(out.glob("uwsgi_es-*.tar.gz")), "make dist makes the sdist too"
    return found


def user_environment(python: Path, home: Path, port: int) -> dict[str, str]:
    """A user's shell: `python3` is the Python under test; nothing of this checkout or of the test
    run (no PYTHONPATH, no VIRTUAL_ENV, no UWSGI_ES_* but the port)."""
    shims = home / "shims"
    shims.mkdir(exist_ok=True)
    (shims / "python3").unlink(missing_ok=True)
    (shims / "python3").symlink_to(python)
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CACHE_DIR")}
    system_path = ":".join(p for p in os.environ["PATH"].split(":") if not p.startswith(sys.prefix))
    return {**keep, "PATH": f"{shims}:{system_path}", "UWSGI_ES_HTTP": f"127.0.0.1:{port}"}


def in_shell(text: str, project: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run a block of the tutorial in bash in the project directory, the virtualenv activated
    once it exists ("activate the virtualenv in every shell you use below")."""
    script = "set -e\nif [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi\n" + text
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"$ {text}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self, mules: int, timeout: float = 90) -> None:
        """Every worker built its application and the projection mule runs (an open port, or one
        ready worker, is not readiness)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"uWSGI exited with {self.process.returncode}:\n{self.text()}"
            log = self.text()
            built = set(re.findall(r"event=build worker=(\d+) ", log)) - {"0"}
            running = log.count("event=projection_runner ")
            if len(built) == WORKERS and running == mules and self.get("/ready")[0] == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"not serving after {timeout}s:\n{self.text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def serve(command: str, project: Path, env: dict[str, str], port: int, log: Path) -> Served:
    script = f". .venv/bin/activate\nexec {command}"
    with log.open("ab") as output:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Served(process, log, port)


@pytest.fixture
def stopping() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        served.stop()


def prove_one_application_per_worker(served: Served) -> set[int]:
    answers = fan_out(80, lambda _: served.get("/worker"), concurrency=8)
    reports = [json.loads(body) for status, body in answers if status == 200]
    assert len(reports) == len(answers), [a for a in answers if a[0] != 200][:3]
    for report in reports:
        assert report["pid"] == report["built_in_pid"], report
        assert report["constructions"] == 1, report
    pids = {report["pid"] for report in reports}
    assert len(pids) == WORKERS, f"expected {WORKERS} workers to answer, got {pids}"
    return pids


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_tutorial_from_a_wheel_outside_the_checkout(
    version: str, wheel: Path, tmp_path: Path, stopping: list[Served]
) -> None:
    """Every step of docs/TUTORIAL.md, verbatim, from the wheel, on Python ``version``."""
    python = find(version)
    project = tmp_path / "shop-project"
    project.mkdir()
    shutil.copy(wheel, project)
    port = free_port()
    env = user_environment(python, tmp_path, port)
    tutorial = steps()
    assert [s.kind for s in tutorial].count("serve") == 1, "the tutorial starts the server once"
    started = time.monotonic()
    for step in tutorial:
        if step.kind == "file":
            assert step.path
            target = project / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.text)
        elif step.kind == "run":
            in_shell(step.text, project, env)
        elif step.kind == "serve":
            served = serve(step.text.strip(), project, env, port, tmp_path / "prefork.log")
            stopping.append(served)
            served.wait_until_serving(mules=1)
        elif step.kind == "client":
            output = in_shell(step.text.replace("localhost:8080", f"127.0.0.1:{port}"), project, env)
            first_answer = time.monotonic() - started
            read, worker = (json.loads(line) for line in output.strip().splitlines())
            assert (read["owner"], read["size"]) == ("Ann", 1), read
            assert worker["pid"] == worker["built_in_pid"], worker
            assert worker["constructions"] == 1, worker
    print(f"Python {version}: from an empty directory to the first answer in {first_answer:.1f}s")

    venv_python = project / ".venv" / "bin" / "python"
    location = subprocess.run(
        [venv_python, "-c", "import uwsgi_es, sys; print(uwsgi_es.__file__, sys.version_info[:2])"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(project / ".venv") in location, location
    assert str(PROJECT) not in location, location
    assert f"({version.replace('.', ', ')})" in location, location

    prove_one_application_per_worker(served)
    assert crashes(served.text()) == [], served.text()
    served.stop()

    # The same ini under lazy-apps: each worker imports the module itself; the mule line still works.
    lazy = serve("uwsgi --ini uwsgi.ini --lazy-apps", project, env, port, tmp_path / "lazy.log")
    stopping.append(lazy)
    lazy.wait_until_serving(mules=1)
    client = next(s for s in tutorial if s.kind == "client")
    output = in_shell(client.text.replace("localhost:8080", f"127.0.0.1:{port}"), project, env)
    read, _ = (json.loads(line) for line in output.strip().splitlines())
    assert read["size"] == 1, read
    prove_one_application_per_worker(lazy)
    assert crashes(lazy.text()) == [], lazy.text()
