"""The read side's contract on SQLite and on the real PostgreSQL, plus what only PostgreSQL has:
LISTEN/NOTIFY wake-ups, and a runner that outlives its LISTEN connection."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine

from uwsgi_es.example.balances import Balances
from uwsgi_es.readside import ProjectionRunner
from uwsgi_es.readside import status as readside
from uwsgi_es.settings import Settings
from uwsgi_es.stores import unit_of_work

from ..support.listeners import count_listeners, terminate_listeners
from .readside_contract import Bank, ReadSideContract


class TestReadSideOnSQLite(ReadSideContract):
    @pytest.fixture
    def database_url(self, sqlite_url: str) -> str:
        return sqlite_url


@pytest.mark.postgres
class TestReadSideOnPostgres(ReadSideContract):
    @pytest.fixture
    def database_url(self, postgres_url: str) -> str:
        return postgres_url

    def test_a_lost_listen_connection_costs_at_most_the_poll_interval(
        self, app: Bank, database_url: str
    ) -> None:
        """pg_terminate_backend on the runner's LISTEN connection: it polls (1 s here), events
        appended meanwhile are applied within that interval, and it listens again."""
        runner = ProjectionRunner(app, Balances(), Settings(readside_poll_interval=1.0))
        stop = threading.Event()
        follower = threading.Thread(target=runner.run, args=(stop,))
        follower.start()
        admin = create_engine(database_url)
        try:
            time.sleep(0.5)
            assert terminate_listeners(admin) == [True]
            app.open_account("after the kill")
            position = unit_of_work.current().position or 0
            started = time.monotonic()
            while readside.report(app)["balances"]["position"] < position:
                assert time.monotonic() - started < 2.5, "not applied within the poll interval (1 s)"
                time.sleep(0.02)
            deadline = time.monotonic() + 5
            listening = 0
            while time.monotonic() < deadline and listening == 0:
                listening = count_listeners(admin)
                time.sleep(0.1)
            assert listening == 1, "the runner did not listen again"
        finally:
            stop.set()
            follower.join(10)
            admin.dispose()
