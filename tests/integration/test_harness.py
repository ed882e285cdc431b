"""The shipped harness: clear failures with the log, and the pytest fixture users get."""

from __future__ import annotations

from pathlib import Path

import pytest

from uwsgi_es.testing import UwsgiServer, UwsgiStartError

from ..support.paths import INI, PROJECT

pytestmark = pytest.mark.integration
pytest_plugins = ["pytester"]


def test_a_misspelt_option_fails_fast_with_the_log(tmp_path: Path) -> None:
    """A user's strict ini (our declarations included, so UWSGI_ES_* variables pass) refuses unknown
    options; the harness raises at once with uWSGI's own words."""
    declarations = PROJECT / "deploy" / "uwsgi-es-settings.ini"
    ini = tmp_path / "mine.ini"
    ini.write_text(f"[uwsgi]\nstrict = true\nini = {declarations}\nini = {INI}\nproceses = 2\n")
    server = UwsgiServer(ini, log_dir=tmp_path, startup_timeout=30)
    with pytest.raises(UwsgiStartError, match="unknown config directive: proceses"):
        server.start()
    assert server.process is not None
    assert server.process.poll() is not None


def test_fixture_reports_the_uwsgi_log_when_a_test_fails(pytester: pytest.Pytester, sqlite_url: str) -> None:
    """A user's failing test shows the uWSGI log in its report, via the auto-registered plugin."""
    pytester.makepyfile(
        f"""
        def test_user(uwsgi_server):
            server = uwsgi_server({str(INI)!r}, env={{"UWSGI_ES_DATABASE_URL": {sqlite_url!r}}},
                                  options=["--processes", "2"])
            assert server.get("/worker").json()["constructions"] == 1
            assert server.get("/health").status == 999
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*uWSGI log 0*", "*event=build*application=BankAccounts*"])


def test_the_readme_harness_example_passes_as_written(pytester: pytest.Pytester) -> None:
    """The README's example, verbatim, in a user's project that has a copy of uwsgi.ini: it passes
    (it timed out before: the database it names was never migrated)."""
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## Testing your deployment", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    (pytester.path / "uwsgi.ini").write_text(INI.read_text())
    pytester.makepyfile(test_readme=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout", "120")
    result.assert_outcomes(passed=1)
