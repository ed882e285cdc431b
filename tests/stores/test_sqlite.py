"""The record-store contract on SQLite (a WAL file), plus SQLite's own rules."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest

from uwsgi_es.errors import SchemaMissingError, StoreBusyError, StoreReadOnlyError, StoreUnavailableError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore

from ..support.forking import in_child
from .contract import records
from .snapshot_contract import SnapshotsContract
from .sqlalchemy_contract import SQLAlchemyStoreContract
from .typed_contract import TypedEventsContract


class TestSQLiteStore(SQLAlchemyStoreContract, TypedEventsContract, SnapshotsContract):
    @pytest.fixture
    def database_url(self, sqlite_url: str) -> str:
        return sqlite_url


def test_file_database_uses_wal_and_a_busy_timeout(sqlite_url: str) -> None:
    store = SQLAlchemyRecordStore.from_settings(
        Settings(database_url=sqlite_url, sqlite_busy_timeout_ms=1234)
    )
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    store.close()


def test_missing_database_file_says_to_migrate(tmp_path: Path) -> None:
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=f"sqlite:///{tmp_path}/none/x.sqlite3"))
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        store.ping()
    assert not (tmp_path / "none").exists()  # a worker never creates the file or folder


def test_a_deleted_database_file_is_refused_never_acknowledged(sqlite_url: str, tmp_path: Path) -> None:
    """The file deleted under a running store: writes into the unlinked file would be lost on
    restart, so none is acknowledged; after `migrate` makes a new file, the store uses it."""
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=sqlite_url))
    originator = uuid4()
    store.append(records(originator, range(1, 2)))
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    with pytest.raises(StoreUnavailableError, match="deleted or replaced"):
        store.append(records(originator, range(2, 3)))
    with pytest.raises(StoreUnavailableError):
        store.check_ready()
    assert not path.exists()  # no worker re-creates it: that is migrate's job
    migrating = SQLAlchemyRecordStore.from_settings(Settings(database_url=sqlite_url))
    migrating.create_schema()
    migrating.close()
    store.append(records(originator, range(1, 2)))
    assert [r.originator_version for r in store.select(originator)] == [1]
    store.close()


def test_writers_wait_for_the_lock_within_the_busy_timeout(sqlite_url: str) -> None:
    """Another writer holds the write lock: each waiting writer gives up after the busy timeout with
    StoreBusyError (nothing stored), however many queue; once it is released, writes go through."""
    settings = Settings(database_url=sqlite_url, sqlite_busy_timeout_ms=300)
    store = SQLAlchemyRecordStore.from_settings(settings)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    holder = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    outcomes: list[tuple[str, float]] = []

    def write(n: int) -> None:
        started = time.monotonic()
        try:
            store.append(records(uuid4(), range(1, 2)))
            outcomes.append(("stored", time.monotonic() - started))
        except StoreBusyError:
            outcomes.append(("busy", time.monotonic() - started))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    assert [outcome for outcome, _ in outcomes] == ["busy"] * 6
    assert max(took for _, took in outcomes) < 0.3 + 0.5, outcomes  # each gives up on its own clock
    assert store.select_all(0, 10) == []
    store.append(records(uuid4(), range(1, 2)))
    store.close()


def test_a_lock_file_that_cannot_be_opened_is_a_clear_error(sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    Path(f"{path}.writers").mkdir()  # a folder where the lock file should be: open() fails
    store = SQLAlchemyRecordStore.from_settings(Settings(database_url=sqlite_url))
    with pytest.raises(StoreUnavailableError, match=r"writers' lock file .* cannot be opened"):
        store.append(records(uuid4(), range(1, 2)))
    store.close()


def as_user(uid: int) -> Callable[[Callable[[], object]], tuple[str, object]]:
    """Run a function in a forked child that dropped root for ``uid`` (root ignores file modes)."""

    def run(function: Callable[[], object]) -> tuple[str, object]:
        def dropped() -> object:
            os.setgid(uid)
            os.setuid(uid)
            return function()

        return in_child(dropped)

    return run


def test_a_read_only_file_made_writable_again_is_written_without_a_restart() -> None:
    """A store (in a process of an unprivileged user) that first opened the file while it was
    read-only: writes and readiness are refused with StoreReadOnlyError, not forever: once the file is
    writable the same store writes again."""
    assert os.geteuid() == 0, "this test drops root to make a file read-only for a store: run it as root"
    folder = Path(tempfile.mkdtemp(prefix="uwsgi_es-readonly-"))
    folder.chmod(0o755)  # an unprivileged user must reach it (pytest's tmp_path is root's alone)
    url = f"sqlite:///{folder}/events.sqlite3"
    migrating = SQLAlchemyRecordStore.from_settings(Settings(database_url=url))
    migrating.create_schema()
    migrating.close()
    nobody = 65534
    for item in [folder, *folder.iterdir()]:
        os.chown(item, nobody, nobody)
    database = folder / "events.sqlite3"

    def scenario() -> str:
        store = SQLAlchemyRecordStore.from_settings(Settings(database_url=url))
        database.chmod(0o444)
        store.select(uuid4())  # connects while the file is read-only
        try:
            store.check_ready()
            return "ready while read-only"
        except StoreReadOnlyError:
            pass
        try:
            store.append(records(uuid4(), range(1, 2)))
            return "stored while read-only"
        except StoreReadOnlyError:
            pass
        database.chmod(0o644)
        # SQLite made the -wal and -shm files read-only like the database: the first attempt after
        # the chmod retires them with the last read-only connection, and the next one writes.
        for _ in range(3):
            try:
                store.check_ready()
                break
            except StoreReadOnlyError:
                continue
        store.append(records(uuid4(), range(1, 2)))
        store.close()
        return "recovered"

    try:
        assert as_user(nobody)(scenario) == ("ok", "recovered")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
