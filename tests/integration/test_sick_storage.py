"""A bad day for the storage under a running uWSGI: a deleted or read-only SQLite file, a full disk,
a read-only PostgreSQL, a lock held on the events table. Never a 200 for a write that is not
durably stored, never a hang, /ready telling the truth, and service back without a restart.

Some scenarios need root: `chattr +i` makes a file read-only even for root, and a tmpfs of a few
MB is a disk that fills up (`make test` runs as root in CI; elsewhere these fail, saying so).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from uwsgi_es.cli import migrate as migrate_tables
from uwsgi_es.settings import Settings
from uwsgi_es.testing import UwsgiServer
from uwsgi_es.web.ops import READY_LONGEST_SECONDS

from ..conftest import EXAMPLE
from ..support.paths import INI

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
StartServer = Any
OPTIONS = ["--processes", "2"]


def migrate(url: str) -> None:
    """What a deployment runs first (`uwsgi-es migrate --ini uwsgi.ini`): the store's tables and
    the example's read model, without which /ready names the missing table."""
    migrate_tables(Settings(database_url=url, application=EXAMPLE))


def need_root(what: str) -> None:
    assert os.geteuid() == 0, f"this scenario needs root ({what}); run the suite as root, as CI does"


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.2) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        time.sleep(step)
    return time.monotonic() - started


def deposit(server: UwsgiServer, account: str, amount: int) -> int:
    return server.post(f"/accounts/{account}/deposits", {"amount": amount}, timeout=30).status


def ready(server: UwsgiServer) -> set[int]:
    """/ready's status from several requests (so every worker is likely asked)."""
    return {server.get("/ready", timeout=30).status for _ in range(8)}


def balance(server: UwsgiServer, account: str) -> int:
    return int(server.get(f"/accounts/{account}").json()["balance"])


def test_a_sqlite_file_deleted_under_the_server_is_never_written_to_in_vain(
    uwsgi_server: StartServer, sqlite_url: str, report: Any
) -> None:
    """The database file deleted while uWSGI runs: writes would go to the unlinked file and vanish
    at the next restart, so every write answers 503 and /ready fails; `uwsgi-es migrate` (a new
    file) brings service back without a restart."""
    server = uwsgi_server(INI, env={"UWSGI_ES_DATABASE_URL": sqlite_url}, options=OPTIONS)
    account = server.post("/accounts", {"owner": "deleted"}).json()["id"]
    assert deposit(server, account, 5) == 200
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        file.unlink(missing_ok=True)
    statuses = [deposit(server, account, 1) for _ in range(20)]
    assert set(statuses) == {503}, statuses
    time.sleep(READY_LONGEST_SECONDS)  # /ready answers from a check at most this old
    assert ready(server) == {503}
    assert server.post("/accounts", {"owner": "x"}).json() == {"error": "the event store is unavailable"}
    assert "was deleted or replaced while this worker used it" in server.log()
    migrate(sqlite_url)
    back = wait_for(lambda: ready(server) == {200}, 10)
    fresh = server.post("/accounts", {"owner": "after"}).json()["id"]
    assert deposit(server, fresh, 3) == 200
    report(
        "SQLite file deleted under the server",
        {"UWSGI_ES_DATABASE_URL": sqlite_url},
        f"{len(statuses)} writes after the deletion: all 503, none acknowledged; /ready 503; "
        f"serving {back:.1f}s after `uwsgi-es migrate`, without a restart",
    )


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[Callable[[], None]]:
    """``chattr +i``: not writable, even by root; yields a function that lifts it early."""
    need_root("chattr +i")
    subprocess.run(["chattr", "+i", str(path)], check=True)
    lifted = False

    def lift() -> None:
        nonlocal lifted
        if not lifted:
            subprocess.run(["chattr", "-i", str(path)], check=True)
            lifted = True

    try:
        yield lift
    finally:
        lift()


def test_a_sqlite_file_read_only_at_start_is_written_once_writable(
    uwsgi_server: StartServer, sqlite_url: str, report: Any
) -> None:
    """Workers that opened the file while it was read-only: /ready and writes answer 503 ("cannot
    accept writes"), reads work; once the file is writable, both recover within seconds."""
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    with immutable(path) as lift:
        server = uwsgi_server(
            INI, env={"UWSGI_ES_DATABASE_URL": sqlite_url}, options=OPTIONS, wait_for="health"
        )
        assert ready(server) == {503}
        refused = server.post("/accounts", {"owner": "ro"})
        assert refused.status == 503
        assert refused.json() == {"error": "the event store cannot accept writes"}
        assert server.get("/events").status == 200  # reads still answer
        lift()
        back = wait_for(lambda: ready(server) == {200}, 10)
    account = server.post("/accounts", {"owner": "writable"}).json()["id"]
    assert deposit(server, account, 7) == 200
    assert balance(server, account) == 7
    report(
        "SQLite file read-only, then writable",
        {"UWSGI_ES_DATABASE_URL": sqlite_url},
        f"while read-only: /ready 503, writes 503 'cannot accept writes', reads 200; "
        f"/ready 200 and writes acknowledged {back:.1f}s after the file became writable, no restart",
    )


@contextlib.contextmanager
def small_disk(megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` MB: a disk that fills up."""
    need_root("mount -t tmpfs")
    folder = Path(tempfile.mkdtemp(prefix="uwsgi_es-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full."""
    filler = folder / "filler"
    with (
        contextlib.suppress(OSError),
        open(filler, "wb", buffering=0) as out,
    ):  # unbuffered: close() never writes
        while True:
            out.write(b"\0" * 65536)
    return filler


def test_a_full_disk_refuses_writes_and_recovers_when_space_returns(
    uwsgi_server: StartServer, report: Any
) -> None:
    """The disk under the SQLite file fills up: no write is acknowledged that is not stored,
    /ready fails; freeing space brings writes back without a restart. Every acknowledged deposit
    is in the balance afterwards."""
    with small_disk(12) as disk:
        url = f"sqlite:///{disk}/events.sqlite3"
        migrate(url)
        server = uwsgi_server(INI, env={"UWSGI_ES_DATABASE_URL": url}, options=OPTIONS)
        account = server.post("/accounts", {"owner": "full"}).json()["id"]
        acknowledged = 0
        filler = fill(disk)
        outcomes = []
        for _ in range(200):  # the WAL file has some room left; write until it has none
            status = deposit(server, account, 1)
            outcomes.append(status)
            acknowledged += status == 200
            if status == 503:
                break
        assert outcomes[-1] == 503, "the disk never filled"
        assert set(outcomes) <= {200, 503}
        time.sleep(READY_LONGEST_SECONDS)  # /ready answers from a check at most this old
        assert ready(server) == {503}
        filler.unlink()
        back = wait_for(lambda: ready(server) == {200}, 10)
        assert deposit(server, account, 1) == 200
        acknowledged += 1
        assert balance(server, account) == acknowledged
    report(
        "disk full under SQLite",
        {"UWSGI_ES_DATABASE_URL": "sqlite"},
        f"{outcomes.count(200)} deposits acknowledged while the disk filled, then 503; /ready 503; "
        f"writes acknowledged {back:.1f}s after space returned; balance = every acknowledged deposit",
    )


def test_a_read_only_postgres_is_not_ready_until_it_takes_writes(
    uwsgi_server: StartServer, postgres_url: str, report: Any
) -> None:
    """default_transaction_read_only on (as a standby after a failover, or an operator's guard):
    writes and /ready answer 503 "cannot accept writes", reads 200; turned off, service is back."""
    env = {"UWSGI_ES_DATABASE_URL": postgres_url}
    server = uwsgi_server(INI, env=env, options=OPTIONS)
    account = server.post("/accounts", {"owner": "pg"}).json()["id"]
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")

    def read_only(on: bool) -> None:
        with admin.connect() as connection:
            connection.execute(
                text(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}")
            )
            connection.execute(text("SELECT pg_reload_conf()"))

    try:
        read_only(True)
        wait_for(lambda: ready(server) == {503}, 10)
        refused = server.post(f"/accounts/{account}/deposits", {"amount": 1})
        assert refused.status == 503
        assert refused.json() == {"error": "the event store cannot accept writes"}
        assert server.get(f"/accounts/{account}").status == 200
    finally:
        read_only(False)
    back = wait_for(lambda: ready(server) == {200}, 10)
    admin.dispose()
    assert deposit(server, account, 2) == 200
    assert balance(server, account) == 2
    report(
        "PostgreSQL read-only, then writable",
        env,
        f"while read-only: /ready 503, writes 503 'cannot accept writes', reads 200; back {back:.1f}s "
        "after it took writes again, no restart",
    )


def test_a_lock_held_on_the_events_table_delays_requests_within_a_bound(
    uwsgi_server: StartServer, postgres_url: str, report: Any
) -> None:
    """Another session holds the events table (SHARE, as CREATE INDEX does) for 8 s: deposits and
    /ready answer 503 "busy" within UWSGI_ES_LOCK_TIMEOUT (1 s here), never hang; released, all serve."""
    env = {"UWSGI_ES_DATABASE_URL": postgres_url, "UWSGI_ES_LOCK_TIMEOUT": "1"}
    server = uwsgi_server(INI, env=env, options=["--processes", "4"])
    account = server.post("/accounts", {"owner": "locked"}).json()["id"]
    holder = create_engine(postgres_url)
    timings: list[tuple[int, float]] = []
    with holder.connect() as connection:
        connection.execute(text("LOCK TABLE integer_sequenced_items IN SHARE MODE"))
        time.sleep(READY_LONGEST_SECONDS)  # /ready answers from a check at most this old
        results: list[tuple[str, int, float]] = []

        def attempt(path: str) -> None:
            started = time.monotonic()
            answer = (
                server.post(path, {"amount": 1}, timeout=30)
                if path.endswith("deposits")
                else server.get(path, timeout=30)
            )
            results.append((path, answer.status, time.monotonic() - started))

        threads = [
            threading.Thread(target=attempt, args=(p,))
            for p in [f"/accounts/{account}/deposits"] * 8 + ["/ready"] * 4
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        timings = [(status, took) for _, status, took in results]
        connection.execute(text("ROLLBACK"))
    holder.dispose()
    assert {status for status, _ in timings} == {503}, timings
    slowest = max(took for _, took in timings)
    assert slowest < 1 + 3, timings  # the bound, plus the queue of 12 requests on 4 workers
    assert "busy: waiting for a lock timed out" in server.log()
    assert deposit(server, account, 4) == 200
    assert ready(server) == {200}
    assert balance(server, account) == 4
    report(
        "lock held on the events table (PostgreSQL)",
        env,
        f"{len(timings)} deposits and /ready probes during the lock: all 503 'busy', slowest "
        f"{slowest:.2f}s (UWSGI_ES_LOCK_TIMEOUT=1); every request served once it was released",
    )


def test_a_held_sqlite_write_lock_delays_writers_within_the_busy_timeout(
    uwsgi_server: StartServer, sqlite_url: str, report: Any
) -> None:
    """Another process holds the SQLite writers' lock: each queued writer answers 503 "busy" after
    UWSGI_ES_SQLITE_BUSY_TIMEOUT_MS (500 ms here), however many wait; released, writes go through."""
    env = {"UWSGI_ES_DATABASE_URL": sqlite_url, "UWSGI_ES_SQLITE_BUSY_TIMEOUT_MS": "500"}
    server = uwsgi_server(INI, env=env, options=["--processes", "4"])
    account = server.post("/accounts", {"owner": "queued"}).json()["id"]
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    holder = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    results: list[tuple[int, float]] = []

    def attempt() -> None:
        started = time.monotonic()
        results.append((deposit(server, account, 1), time.monotonic() - started))

    try:
        threads = [threading.Thread(target=attempt) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    assert {status for status, _ in results} == {503}, results
    slowest = max(took for _, took in results)
    assert slowest < 0.5 * 3 + 1, results  # each worker serves its queued requests one after another
    assert deposit(server, account, 6) == 200
    assert balance(server, account) == 6
    report(
        "SQLite write lock held by another process",
        env,
        f"{len(results)} deposits while it was held: all 503 'busy', slowest {slowest:.2f}s "
        "(busy timeout 0.5 s); writes acknowledged once it was released",
    )
