"""`make bench-servers`: the example's deposit and 10-event read rows served by granian (its WSGI
and ASGI interfaces), gunicorn's ASGI worker and uvicorn against uWSGI, on the same store, side by
side, so users can choose with figures (issue #28).

Every server runs the example with 2 workers (uWSGI with the bench's options, bench/contenders.py:
2 processes; granian's WSGI interface ``uwsgi_es.wsgi:application`` as uWSGI does; the ASGI
servers ``uwsgi_es.asgi:application``: the same WSGI application on a pool of threads). Each row is ROUNDS rounds of (server, uWSGI) wrk runs, the ratio taken
within each round, with how busy each side was. No target: these rows inform a choice; the
section they fill in BENCHMARKS.md sits between markers that `make bench` keeps.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.contenders import PROJECT, Contender, open_accounts, start
from bench.measure import Row, compare
from bench.scale import databases
from bench.wrk import deposit_script, read_script
from uwsgi_es.testing.asgi_servers import AsgiServer

SERVERS = ("granian wsgi", "granian asgi", "gunicorn asgi", "uvicorn")
WORKERS = 2


def server_rows(store: str, url: str, logs: Path) -> list[Row]:
    env = {"UWSGI_ES_DATABASE_URL": url, "UWSGI_ES_APPLICATION": "uwsgi_es.example.domain:BankAccounts"}
    uwsgi = Contender(
        "uWSGI", start("uwsgi_es.wsgi:application", env, logs / f"uwsgi-{store}", wait_for="ready")
    )
    rows: list[Row] = []
    try:
        open_accounts(uwsgi, "read10", 10, 10)
        for name in SERVERS:
            server = AsgiServer(name, workers=WORKERS, env=env, cwd=PROJECT, log_dir=logs / f"{name}-{store}")
            contender = Contender(name, server.start())
            try:
                open_accounts(contender, "read10", 10, 10)
                for side in (contender, uwsgi):  # fresh accounts: a deposit replays its account
                    open_accounts(side, "write", 100, 1)
                rows.append(compare("write: deposit", store, contender, uwsgi, deposit_script, target=0.0))
                rows.append(
                    compare("read: 10 events", store, contender, uwsgi, read_script("read10"), target=0.0)
                )
            finally:
                server.stop()
    finally:
        uwsgi.server.stop()
    return rows


def main() -> None:
    logs = Path(tempfile.mkdtemp(prefix="uwsgi_es-bench-servers-"))
    rows: list[Row] = []
    with databases() as stores:
        for store, make in stores:
            rows += server_rows(store, make("servers")[0], logs)
    from bench.report import write_servers

    write_servers(rows)
    print(f"logs of every server: {logs}")


if __name__ == "__main__":
    main()
