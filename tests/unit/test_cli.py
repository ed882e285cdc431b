"""`uwsgi-es migrate` creates the schema idempotently; `check` says what is wrong in one line."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

import uwsgi_es
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


UWSGI_ES = Path(sys.executable).parent / "uwsgi-es"
SHOP = """
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import Column, Integer, MetaData, Table

from uwsgi_es import Aggregate, Application
from uwsgi_es.readside import Projection


class Thing(Aggregate):
    @dataclass(frozen=True)
    class Made(Aggregate.Created):
        def apply(self, thing: Any) -> None:
            pass


def table(name: str) -> MetaData:
    metadata = MetaData()
    Table(name, metadata, Column("id", Integer, primary_key=True))
    return metadata


class Counts(Projection):
    name = "counts"
    metadata = table("counts")

    def process(self, event: Any, position: int, connection: Any) -> None:
        pass


class Totals(Projection):
    name = "totals"
    metadata = table("totals")

    def process(self, event: Any, position: int, connection: Any) -> None:
        pass


class Things(Application):
    projections: ClassVar = ("myshop.domain:Counts", "myshop.domain:Totals")
"""


def user_project(root: Path) -> Path:
    """A user's project: package ``myshop`` (two projections) and its WSGI module, nothing else."""
    package = root / "myshop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "domain.py").write_text(SHOP)
    (package / "wsgi.py").write_text(
        "from uwsgi_es import install\nfrom uwsgi_es.web import JsonApi\n"
        "from myshop.domain import Things\n\ninstall(Things)\napplication = JsonApi(Things)\n"
    )
    return root


def cli(*arguments: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it: a clean environment, from ``cwd``."""
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    return subprocess.run(
        [str(UWSGI_ES), *arguments], cwd=cwd, env=environment, capture_output=True, text=True, check=False
    )


def test_the_cli_imports_the_users_code_from_the_current_directory(tmp_path: Path) -> None:
    """`uwsgi-es migrate` in the user's project, UWSGI_ES_APPLICATION naming their class: imported
    from the current directory as `python -m` would (it failed: "No module named 'myshop'")."""
    project = user_project(tmp_path / "project")
    done = cli(
        "migrate",
        cwd=project,
        env={"UWSGI_ES_APPLICATION": "myshop.domain:Things", "UWSGI_ES_DATABASE_URL": "sqlite:///app.db"},
    )
    assert done.returncode == 0, done.stderr
    assert "Things, named by UWSGI_ES_APPLICATION=myshop.domain:Things" in done.stdout
    assert "read models of counts, totals" in done.stdout
    assert (project / "app.db").is_file()


def test_migrate_finds_the_application_in_the_ini_and_works_from_its_directory(tmp_path: Path) -> None:
    """`uwsgi-es migrate --ini` from anywhere: the ini's module names the application (no setting
    needed), the relative SQLite path is the ini's (chdir), every read model is created; `check`
    then verifies them, and names a missing one with the fix."""
    project = user_project(tmp_path / "project")
    assert cli("init", "myshop.wsgi:application", cwd=project).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli("migrate", "--ini", str(project / "uwsgi.ini"), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "Things, named by the module myshop.wsgi" in done.stdout
    assert "read models of counts, totals" in done.stdout
    database = project / "var" / "uwsgi_es.sqlite3"
    assert database.is_file()
    checked = cli("check", "--ini", str(project / "uwsgi.ini"), cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert "read models of counts, totals" in checked.stdout
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("DROP TABLE totals")
    checked = cli("check", "--ini", str(project / "uwsgi.ini"), cwd=elsewhere)
    assert checked.returncode == 1
    assert "'totals'" in checked.stderr
    assert "uwsgi-es migrate --ini" in checked.stderr
    assert len(checked.stderr.strip().splitlines()) == 1, checked.stderr


def test_migrate_refuses_an_ini_and_a_setting_that_name_different_applications(tmp_path: Path) -> None:
    """The ini serves myshop's Things; UWSGI_ES_APPLICATION names the example: one clear line."""
    project = user_project(tmp_path / "project")
    assert cli("init", "myshop.wsgi:application", cwd=project).returncode == 0
    done = cli(
        "migrate",
        "--ini",
        "uwsgi.ini",
        cwd=project,
        env={"UWSGI_ES_APPLICATION": "uwsgi_es.example.domain:BankAccounts"},
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "names uwsgi_es.example.domain:BankAccounts, but the module myshop.wsgi installs" in done.stderr
    assert not (project / "var" / "uwsgi_es.sqlite3").exists(), "nothing is created when they disagree"


def test_init_writes_one_mule_per_projection_and_refuses_to_overwrite(tmp_path: Path) -> None:
    """`uwsgi-es init MODULE`: the ini serves that module, with one projection mule per projection
    its application declares (here two), and is not written over an existing file."""
    project = user_project(tmp_path / "project")
    done = cli("init", "myshop.wsgi:application", cwd=project)
    assert done.returncode == 0, done.stderr
    text = (project / "uwsgi.ini").read_text()
    assert "\nmodule = myshop.wsgi:application\n" in text
    assert re.findall(r"^mule = .*$", text, flags=re.MULTILINE) == ["mule = %b-es-mule.py"] * 2
    assert "(counts, totals)" in text
    again = cli("init", "myshop.wsgi:application", cwd=project)
    assert again.returncode == 1
    assert "exists" in again.stderr
    missing = cli("init", "myshop.nothing:application", cwd=project)
    assert missing.returncode == 1
    assert "cannot import 'myshop.nothing'" in missing.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"uwsgi-es {uwsgi_es.__version__}"
