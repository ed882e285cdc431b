"""`uwsgi-es migrate` creates the schema idempotently; `check` says what is wrong in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uwsgi_es.cli import main


def test_migrate_is_idempotent_and_check_then_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UWSGI_ES_DATABASE_URL", f"sqlite:///{tmp_path}/new/dir/events.sqlite3")
    assert main(["check"]) == 1
    assert "uwsgi-es migrate" in capsys.readouterr().err
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    assert main(["check"]) == 0
    assert "answers and has its tables" in capsys.readouterr().out


def test_bad_setting_exits_1_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UWSGI_ES_POOL_SIZE", "-3")
    assert main(["migrate"]) == 1
    assert "UWSGI_ES_POOL_SIZE=-3 is out of range" in capsys.readouterr().err


def test_console_script_is_installed(tmp_path: Path) -> None:
    """The `uwsgi-es` entry point runs (as `make run` uses it)."""
    script = Path(sys.executable).parent / "uwsgi-es"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "migrate" in result.stdout


def test_migrate_and_check_an_eventsourcing_library_application(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For a library application, `check` names the missing table and `migrate`; `migrate`
    creates the library's tables (idempotently); a module the library cannot resolve exits 1."""
    monkeypatch.setenv("UWSGI_ES_APPLICATION", "examples.eventsourcing_bank.application:BankAccounts")
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.sqlite")
    monkeypatch.setenv("SQLITE_DBNAME", str(tmp_path / "library.db"))
    assert main(["check"]) == 1
    assert "uwsgi-es migrate" in capsys.readouterr().err
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    assert "schema ready for BankAccounts (eventsourcing.sqlite at" in capsys.readouterr().out
    assert main(["check"]) == 0
    assert "BankAccounts (eventsourcing.sqlite" in capsys.readouterr().out
    monkeypatch.setenv("PERSISTENCE_MODULE", "no.such.module")
    assert main(["check"]) == 1
    assert "no.such.module" in capsys.readouterr().err


def test_migrate_creates_the_read_models_and_project_names_an_unknown_projection(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With UWSGI_ES_APPLICATION, migrate creates its projections' tables too; `project` refuses
    a name the application does not declare, listing the ones it does."""
    monkeypatch.setenv("UWSGI_ES_DATABASE_URL", f"sqlite:///{tmp_path}/events.sqlite3")
    monkeypatch.setenv("UWSGI_ES_APPLICATION", "uwsgi_es.example.domain:BankAccounts")
    assert main(["migrate"]) == 0
    assert "read models of balances" in capsys.readouterr().out
    assert main(["project", "balance"]) == 1
    assert "no projection named 'balance' (its projections: balances)" in capsys.readouterr().err
