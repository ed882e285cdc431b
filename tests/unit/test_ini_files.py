"""Every shipped ini declares exactly our settings, so `strict = true` accepts UWSGI_ES_* variables.

uWSGI reads each UWSGI_* environment variable as one of its own options; undeclared, a
UWSGI_ES_* setting makes a strict uWSGI refuse to start.
"""

from __future__ import annotations

import re
from dataclasses import fields

from uwsgi_es.settings import OTHER_KNOWN_VARIABLES, PREFIX, Settings

from ..conftest import PROJECT


def test_declarations_match_the_settings() -> None:
    text = (PROJECT / "deploy" / "uwsgi-es-settings.ini").read_text()
    declared = set(re.findall(r"^declare-option = (es-[a-z-]+)=$", text, flags=re.MULTILINE))
    variables = {PREFIX + f.name.upper() for f in fields(Settings)} | OTHER_KNOWN_VARIABLES
    expected = {name.removeprefix("UWSGI_").lower().replace("_", "-") for name in variables}
    assert declared == expected


def test_every_strict_ini_includes_the_declarations() -> None:
    inis = [PROJECT / "uwsgi.ini", *sorted((PROJECT / "deploy").glob("uwsgi*.ini"))]
    for ini in inis:
        text = ini.read_text()
        if ini.name == "uwsgi-es-settings.ini" or "strict = true" not in text:
            continue
        assert "uwsgi-es-settings.ini" in text, f"{ini} is strict but does not include the declarations"


def test_the_readme_documents_every_setting() -> None:
    """The configuration table names each variable the settings read (a setting nobody can find
    is a setting nobody can use)."""
    text = (PROJECT / "README.md").read_text()
    rows = re.findall(r"^\| (`UWSGI_ES_[A-Z_]+`.*?) \|", text, flags=re.MULTILINE)
    documented = set(re.findall(r"`(UWSGI_ES_[A-Z_]+)`", " ".join(rows)))
    variables = {PREFIX + f.name.upper() for f in fields(Settings)} | OTHER_KNOWN_VARIABLES
    assert variables - documented == set()
