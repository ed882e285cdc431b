"""Opens a PostgreSQL connection when imported: in the master, so every worker shares its socket."""

import os

import psycopg

connection = psycopg.connect(os.environ["DOCTOR_APP_DSN"])


def application(environ, start_response):  # type: ignore[no-untyped-def]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
