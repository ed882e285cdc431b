"""The example's read-model routes over WSGI (Werkzeug's test client, a real SQLite file) when the
database was migrated without naming the application: never a 500, always the fix."""

from __future__ import annotations

from sqlalchemy import create_engine
from werkzeug.test import Client

from uwsgi_es.example.balances import balances_table


def test_without_the_read_model_table_reads_and_ready_answer_503_naming_the_fix(
    client: Client, sqlite_url: str
) -> None:
    """No balances table: GET /balances and /balances/{id} answer 503 naming the projection, the
    table and `uwsgi-es migrate` (they answered 500), with Retry-After; /ready answers 503 naming
    the projection (it answered 200); once the table exists both answer 200."""
    engine = create_engine(sqlite_url)
    balances_table.drop(engine)
    account = client.post("/accounts", json={"owner": "ann"}).json["id"]  # type: ignore[index]
    for path in ("/balances", f"/balances/{account}", "/ready"):
        answer = client.get(path)
        assert answer.status_code == 503, (path, answer.get_data(as_text=True))
        message = answer.json["error"]  # type: ignore[index]
        assert "projection 'balances'" in message
        assert "table balances does not exist" in message
        assert "uwsgi-es migrate" in message
        assert answer.headers["Retry-After"] == "1"
    balances_table.create(engine)
    engine.dispose()
    assert client.get("/balances").status_code == 200
    assert client.get("/ready").status_code == 200
