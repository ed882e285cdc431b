"""The settings are declared once (uwsgi_es/settings.py); the committed copies rendered from that
declaration (the README's table, deploy/uwsgi-es-settings.ini) must be what it renders today."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from uwsgi_es.cli import main
from uwsgi_es.settings import declared, render_ini, render_markdown, uwsgi_option_name
from uwsgi_es.testing.asgi_servers import SERVERS, server_command

from ..support.paths import PROJECT


def test_the_declarations_ini_is_rendered_from_the_settings() -> None:
    """deploy/uwsgi-es-settings.ini = `uwsgi-es settings --ini`: regenerate it after adding a setting."""
    committed = (PROJECT / "deploy" / "uwsgi-es-settings.ini").read_text()
    assert committed == render_ini(), "run: uwsgi-es settings --ini > deploy/uwsgi-es-settings.ini"
    declared_options = set(re.findall(r"^declare-option = (es-[a-z-]+)=$", committed, flags=re.MULTILINE))
    assert declared_options == {uwsgi_option_name(name) for name, _, _ in declared()}


def test_the_readme_table_is_rendered_from_the_settings() -> None:
    """The README's configuration table = `uwsgi-es settings --markdown` (a setting nobody can find
    is a setting nobody can use)."""
    text = (PROJECT / "README.md").read_text()
    table = text.split("<!-- settings:", 1)[1].split("-->", 1)[1].split("<!-- end of settings -->", 1)[0]
    assert table.strip() == render_markdown().strip(), "regenerate it with: uwsgi-es settings --markdown"


def test_every_strict_ini_includes_the_declarations() -> None:
    inis = [PROJECT / "uwsgi.ini", *sorted((PROJECT / "deploy").glob("uwsgi*.ini"))]
    for ini in inis:
        text = ini.read_text()
        if ini.name == "uwsgi-es-settings.ini" or "strict = true" not in text:
            continue
        assert "uwsgi-es-settings.ini" in text, f"{ini} is strict but does not include the declarations"


def test_the_cli_prints_both_renderings(capsys: object) -> None:
    assert main(["settings", "--ini"]) == 0
    assert main(["settings", "--markdown"]) == 0


def uwsgi_options() -> set[str]:
    """Every option this uWSGI knows, from its own --help."""
    binary = Path(sys.executable).parent / "uwsgi"
    result = subprocess.run([binary, "--help"], capture_output=True, text=True, check=False)
    names = re.findall(r"^\s+(?:-\w\|)?--([a-z0-9-]+)", result.stdout, flags=re.MULTILINE)
    assert len(names) > 500, result.stdout[:500]
    return set(names)


def test_every_option_of_the_shipped_inis_is_one_uwsgi_knows() -> None:
    """The shipped inis are not strict (see uwsgi.ini), so a misspelt option there would be ignored
    in silence: this test is their strict mode."""
    known = uwsgi_options()
    inis = [PROJECT / "uwsgi.ini", *sorted((PROJECT / "deploy").glob("uwsgi*.ini"))]
    for ini in inis:
        options = re.findall(r"^([a-z0-9-]+)\s*=", ini.read_text(), flags=re.MULTILINE)
        assert options, ini
        assert set(options) - known == set(), f"{ini.name} uses options uWSGI does not know"


def test_uwsgi_ini_is_what_uwsgi_es_init_writes_for_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped uwsgi.ini and the ini `uwsgi-es init` writes for a user's module come from one
    template (uwsgi_es/cli/uwsgi.ini.template): regenerate uwsgi.ini after changing it."""
    assert main(["init", "uwsgi_es.wsgi:application", "--output", "-"]) == 0
    written = capsys.readouterr().out
    assert (PROJECT / "uwsgi.ini").read_text() == written, (
        "run: uwsgi-es init uwsgi_es.wsgi:application --output uwsgi.ini --force"
    )


def active_options(text: str, environment: set[str]) -> dict[str, str]:
    """The options of an ini's text that apply when exactly the variables ``environment`` are set
    (uWSGI's ``if-env``/``if-not-env`` ... ``endif`` blocks; the other ``if-*`` blocks count as
    applying)."""
    options: dict[str, str] = {}
    applies = [True]
    for key, value in re.findall(r"^([a-z0-9-]+)[ \t]*=[ \t]*(.*)$", text, flags=re.MULTILINE):
        if key in ("if-env", "if-not-env"):
            applies.append(applies[-1] and ((value.strip() in environment) == (key == "if-env")))
        elif key.startswith("if-"):
            applies.append(applies[-1])
        elif key == "endif":
            applies.pop()
        elif applies[-1]:
            options[key] = value
    return options


def test_no_shipped_ini_uses_a_fork_option_fatal_on_some_python_or_to_mules() -> None:
    """py-call-osafterfork aborts every process on Python 3.13 (unbit/uwsgi#2710); the fork hooks
    crash Python mules, so an ini that sets them runs none, whichever variables its blocks test."""
    inis = [PROJECT / "uwsgi.ini", *sorted((PROJECT / "deploy").glob("uwsgi*.ini"))]
    for ini in inis:
        text = ini.read_text()
        tested = set(re.findall(r"^if-(?:not-)?env\s*=\s*(\S+)", text, flags=re.MULTILINE))
        for count in range(len(tested) + 1):
            for environment in map(set, itertools.combinations(sorted(tested), count)):
                options = active_options(text, environment)
                where = f"{ini.name} with {sorted(environment)} set"
                assert "py-call-osafterfork" not in options, where
                if "py-call-uwsgi-fork-hooks" in options:
                    assert "mule" not in options, f"{where}: a Python mule beside the fork hooks crashes"
                    assert "ini" not in options or not options["ini"].endswith("uwsgi.ini"), (
                        f"{where} includes uwsgi.ini whole, with its mule"
                    )


@pytest.mark.parametrize("server", SERVERS)
def test_the_readme_gives_the_command_line_the_tests_start(server: str) -> None:
    """Each server's section shows the command line uwsgi_es.testing.asgi_servers starts."""
    command = server_command(server, 8080)
    line = " ".join([Path(command[0]).name, *command[1:]])
    assert f"\n{line}\n" in (PROJECT / "README.md").read_text(), line
