"""No password reaches a log line, an error message, CLI output or a response, in any URL form the
drivers accept: user:password@, ?password=, ?sslpassword=, a URL nested in ?dbname=, percent-encoded,
and URLs that do not parse at all (a typo), which are never echoed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug.test import Client

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.redaction import redact_url, scrub, secrets_of
from uwsgi_es.settings import Settings
from uwsgi_es.testing import free_port

SECRET = "hunter2secret"  # noqa: S105 (a fake password the tests look for)
FORMS = [
    f"postgresql+psycopg://app:{SECRET}@127.0.0.1:{{port}}/app",
    f"postgresql+psycopg://app@127.0.0.1:{{port}}/app?password={SECRET}",
    f"postgresql+psycopg://app@127.0.0.1:{{port}}/app?sslmode=prefer&sslpassword={SECRET}",
    f"postgresql+psycopg:///app?host=127.0.0.1&port={{port}}&user=app&password={SECRET}",
    # libpq takes a whole URL as dbname; inside a query it is percent-encoded
    f"postgresql+psycopg://app@127.0.0.1:{{port}}/app?dbname=postgresql%3A%2F%2Fa%3A{SECRET}%40h%2Fdb",
    "postgresql+psycopg://app:hunter2%73ecret@127.0.0.1:{port}/app",  # %73 is "s": the same secret
]
TYPOS = [
    f"postgresql+psycopg:/app:{SECRET}@127.0.0.1/app",  # a missing slash
    f"postgresql+psycopg//app:{SECRET}@127.0.0.1/app",  # a missing colon
    f"postgresql+psycopg://app:{SECRET}@127.0.0.1:54x32/app",  # a port that is not a number
]


@pytest.mark.parametrize("form", FORMS)
def test_redacted_urls_and_their_secrets(form: str) -> None:
    url = form.format(port=5432)
    shown = redact_url(url)
    assert SECRET not in shown
    assert "127.0.0.1" in shown or "host=127.0.0.1" in shown
    assert SECRET in secrets_of(url)
    assert SECRET not in scrub(f"driver said: password {SECRET} rejected", secrets_of(url))


@pytest.mark.parametrize("typo", TYPOS)
def test_a_url_that_does_not_parse_is_never_echoed(typo: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_environ({"UWSGI_ES_DATABASE_URL": typo})
    assert SECRET not in str(caught.value)
    assert "UWSGI_ES_DATABASE_URL" in str(caught.value)
    assert SECRET not in redact_url(typo)


@pytest.mark.parametrize("form", FORMS)
def test_a_failing_connection_leaks_no_secret(
    form: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real psycopg connection refused (nothing listens on the port): the 503 body, the log and
    the operator's /worker report all leave the password out."""
    from uwsgi_es.wsgi import application

    monkeypatch.setenv("UWSGI_ES_DATABASE_URL", form.format(port=free_port()))
    monkeypatch.setenv("UWSGI_ES_CONNECT_TIMEOUT", "1")
    client = Client(application)
    answers = [client.get("/ready"), client.post("/accounts", json={"owner": "x"})]
    worker = client.get("/worker", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    for answer in [*answers, worker]:
        assert answer.status_code == 503
        assert SECRET not in answer.get_data(as_text=True)
        assert "127.0.0.1" not in answer.json["error"]  # type: ignore[index]
    assert "127.0.0.1" in worker.json["detail"]  # type: ignore[index]  # operators see the cause
    assert SECRET not in caplog.text


@pytest.mark.parametrize("url", [*(f.format(port=free_port()) for f in FORMS), *TYPOS])
def test_cli_output_holds_no_secret(url: str, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "uwsgi-es"
    env = {
        "PATH": str(Path(sys.executable).parent),
        "UWSGI_ES_DATABASE_URL": url,
        "UWSGI_ES_CONNECT_TIMEOUT": "1",
    }
    for command in ("check", "migrate"):
        result = subprocess.run([script, command], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 1, result.stderr
        output = result.stdout + result.stderr
        assert SECRET not in output
        assert "Traceback" not in output
        assert len(output.strip().splitlines()) == 1, output
