"""What goes wrong around the read side, on each SQL backend (subclassed like ``ReadSideContract``,
whose ``database_url`` fixture it shares): a read model whose tables are missing (a read answers
503 naming the fix, never 500; /ready names the projection), a runner that cannot run for a lasting
reason (recorded, named by /ready, cleared when it runs again; one failure is not enough), and a
database that also holds another application's events (passed over, not a stop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from uuid import uuid4

import pytest
from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, insert, select
from sqlalchemy.exc import OperationalError

from uwsgi_es.domain import DomainEvent, topic_of
from uwsgi_es.errors import (
    ProjectionCannotRunError,
    ProjectionStoppedError,
    ReadModelMissingError,
    ReadSideUnavailableError,
    SchemaMissingError,
    StoreUnavailableError,
)
from uwsgi_es.example.balances import Balances, balances_table
from uwsgi_es.example.domain import BankAccount
from uwsgi_es.readside import Projection, ProjectionRunner, projected
from uwsgi_es.readside import status as readside
from uwsgi_es.readside.tracking import record_trouble
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import StoredRecord
from uwsgi_es.stores.sqlalchemy.schema import tracking_table
from uwsgi_es.web.status import answer_for

from ..apps.readside_app import Bank, Effects
from .readside_contract import effects, fold, read_model

FOREIGN_TOPIC = "other_app.domain:Thing.Happened"  # a class no module of this process defines


lookup_metadata = MetaData()
lookup_effects = Table("test_lookup_effects", lookup_metadata, Column("position", BigInteger()))
# Another table the projection reads, which is not among its tables (so migrate does not make it).
rates_table = Table("test_lookup_rates", MetaData(), Column("rate", BigInteger()))


class Lookup(Projection):
    """Reads a table besides its read model: while that table is missing, its runner cannot run
    (the database's fault, not the event's)."""

    name: ClassVar[str] = "lookup"
    metadata: ClassVar[MetaData] = lookup_metadata

    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        connection.execute(select(rates_table)).all()
        connection.execute(insert(lookup_effects).values(position=position))


class Flaky(Projection):
    """Its database "fails" (a driver's operational error) on its first ``failures`` attempts."""

    name: ClassVar[str] = "flaky"
    metadata: ClassVar[MetaData] = lookup_metadata
    failures: ClassVar[int] = 0

    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        if Flaky.failures > 0:
            Flaky.failures -= 1
            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))


class Openings(Projection):
    """Handles openings only, and fails on any other event it is given: it must be given none."""

    name: ClassVar[str] = "openings"
    metadata: ClassVar[MetaData] = lookup_metadata
    handles: ClassVar[tuple[type[DomainEvent], ...]] = (BankAccount.Opened,)

    def process(self, event: DomainEvent, position: int, connection: Connection) -> None:
        if not isinstance(event, BankAccount.Opened):
            raise TypeError(f"given a {type(event).__qualname__}, which it does not handle")
        connection.execute(insert(lookup_effects).values(position=position))


@contextmanager
def following(runner: ProjectionRunner) -> Iterator[None]:
    """``runner`` following the feed in a thread (as in a mule) while the block runs."""
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def eventually(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    """The first true value of ``condition()``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)
    return value


def check_error(app: Bank) -> BaseException | None:
    """What /ready's check raises now (None: the read side is ready)."""
    try:
        readside.check(app)
    except Exception as exc:  # whatever it is: the test looks at it
        return exc
    return None


def foreign(count: int) -> list[StoredRecord]:
    """Events another application stored in the same database (this process has no class of theirs)."""
    thing = uuid4()
    state = '{"timestamp": "2024-01-01T00:00:00Z", "detail": "theirs"}'
    return [StoredRecord(thing, version, FOREIGN_TOPIC, state) for version in range(1, count + 1)]


class FaultyBank(Bank):
    projections: ClassVar[Any] = (Balances, Effects, Lookup, Flaky, Openings)


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The fields of each lifecycle event ``event`` logged so far."""
    return [r.uwsgi_es for r in caplog.records if getattr(r, "uwsgi_es", {}).get("event") == event]


class ReadSideFaultsContract:
    @pytest.fixture
    def app(self, database_url: str) -> Iterator[Bank]:
        app = FaultyBank.from_settings(Settings(database_url=database_url, readside_batch=7, read_wait=0.3))
        for projection in FaultyBank.projections:
            projection.metadata.create_all(app.records.engine)  # type: ignore[attr-defined]
        Effects.poisoned, Flaky.failures = False, 0
        yield app
        Effects.poisoned, Flaky.failures = False, 0
        app.close()

    def test_a_read_of_a_missing_read_model_names_the_table_and_the_fix(self, app: Bank) -> None:
        """Migrated without naming the application, the database has no balances table: a read
        through projected() raises ReadModelMissingError (a 503 that shows its message) naming
        the projection, the table and `uwsgi-es migrate`, instead of the driver's error (a 500)."""
        balances_table.drop(app.records.engine)  # type: ignore[attr-defined]
        with pytest.raises(ReadModelMissingError) as missing, projected(app, Balances) as connection:
            Balances.top(connection, 10)
        message = str(missing.value)
        assert "'balances'" in message
        assert "table balances" in message
        assert "uwsgi-es migrate" in message
        assert "UWSGI_ES_APPLICATION" in message
        answer = answer_for(missing.value)
        assert answer is not None
        assert (answer.status, answer.message) == (503, message)

    def test_a_read_side_database_error_is_the_stores_error(self, app: Bank) -> None:
        """Any other operational error of a read is the store's (503), scrubbed of the URL's
        password; an error that is not the database's passes through untouched."""
        app.records.secrets = ("hunter2",)  # type: ignore[attr-defined]  # as a URL's password is
        with (
            pytest.raises(StoreUnavailableError, match="unavailable: server closed") as failed,
            projected(app, Balances),
        ):
            raise OperationalError("SELECT", {}, Exception("server closed the connection of hunter2"))
        assert "hunter2" not in str(failed.value)
        with pytest.raises(KeyError), projected(app, Balances):
            raise KeyError("a bug of the view")

    def test_ready_names_a_projection_whose_read_model_tables_are_missing(self, app: Bank) -> None:
        """/ready's check answers ReadModelMissingError naming the projection and its missing
        tables until they exist; missing_tables() (for `uwsgi-es check`) lists them."""
        engine = app.records.engine  # type: ignore[attr-defined]
        balances_table.drop(engine)
        assert readside.missing_tables(app.records, FaultyBank.projections) == {"balances": ["balances"]}  # type: ignore[arg-type]
        error = check_error(app)
        assert isinstance(error, ReadModelMissingError)
        assert "'balances'" in str(error)
        assert "uwsgi-es migrate" in str(error)
        Balances.metadata.create_all(engine)
        assert readside.missing_tables(app.records, FaultyBank.projections) == {}  # type: ignore[arg-type]
        assert check_error(app) is None

    def test_a_runner_without_its_read_model_says_so_and_resumes_when_it_exists(
        self, app: Bank, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The runner cannot apply an event without the balances table: it records why at once
        (a missing table does not heal by waiting), its log names the table and the fix; created,
        the runner applies everything and the record is cleared."""
        engine = app.records.engine  # type: ignore[attr-defined]
        balances_table.drop(engine)
        account = app.open_account("no table yet")
        with (
            caplog.at_level(logging.INFO, "uwsgi_es.lifecycle"),
            following(ProjectionRunner(app, Balances())),
        ):
            eventually(lambda: readside.report(app)["balances"]["error"])
            assert readside.report(app)["balances"]["error"].startswith("ReadModelMissingError")
            assert readside.report(app)["balances"]["stopped_at"] is None
            assert isinstance(check_error(app), ReadModelMissingError)
            Balances.metadata.create_all(engine)
            eventually(lambda: check_error(app) is None and readside.report(app)["balances"]["lag"] == 0)
        assert readside.report(app)["balances"]["error"] is None
        assert read_model(app) == {str(account.id): 0}
        waiting = logged(caplog, "projection_waiting")
        assert waiting
        assert "'balances'" in waiting[0]["error"]
        assert "uwsgi-es migrate" in waiting[0]["error"]

    def test_a_runner_that_cannot_run_is_named_by_ready_until_it_runs_again(self, app: Bank) -> None:
        """Lookup reads a table that does not exist (not one of its own): its runner records why,
        /ready's check names the projection and the error's type (not its text), /worker's
        report has the text; once the table exists the runner catches up and the record is
        cleared."""
        app.open_account("lookup")
        with following(ProjectionRunner(app, Lookup())):
            error = eventually(lambda: check_error(app))
            assert isinstance(error, ProjectionCannotRunError)
            assert "'lookup' cannot run" in str(error)
            assert "SchemaMissingError" in str(error)
            assert "test_lookup_rates" not in str(error)  # the text is for operators only
            reported = readside.report(app)["lookup"]
            assert reported["stopped_at"] is None
            assert "SchemaMissingError" in reported["error"]
            rates_table.create(app.records.engine)  # type: ignore[attr-defined]
            eventually(lambda: check_error(app) is None and readside.report(app)["lookup"]["lag"] == 0)
        assert readside.report(app)["lookup"]["error"] is None

    def test_one_database_failure_does_not_make_ready_flap_and_a_lasting_one_does(self, app: Bank) -> None:
        """A failure once is retried (after 1 s) without a trace in /ready; a second in a row is
        recorded: /ready names it until the runner makes progress, which clears it."""
        app.open_account("flaky")
        Flaky.failures = 1
        with following(ProjectionRunner(app, Flaky())):
            while readside.report(app)["flaky"]["lag"] > 0:
                assert check_error(app) is None
                time.sleep(0.02)
        Flaky.failures = 2
        app.open_account("flaky again")
        with following(ProjectionRunner(app, Flaky())):
            error = eventually(lambda: check_error(app))
            assert isinstance(error, ProjectionCannotRunError)
            assert "'flaky' cannot run" in str(error)
            assert "StoreUnavailableError" in str(error)
            eventually(lambda: check_error(app) is None and readside.report(app)["flaky"]["lag"] == 0)
        assert readside.report(app)["flaky"]["error"] is None

    def test_a_cause_left_by_a_killed_runner_is_cleared_by_the_next_one(self, app: Bank) -> None:
        """A runner killed while it could not run leaves its cause behind: the next one clears it
        at its first successful step, even with nothing to apply; a stop is never overwritten."""
        with app.records.write_transaction() as connection:  # type: ignore[attr-defined]
            record_trouble(connection, "balances", "StoreBusyError: the lock was held")
        assert isinstance(check_error(app), ProjectionCannotRunError)
        assert ProjectionRunner(app, Balances()).step() == 0
        assert check_error(app) is None
        Effects.poisoned = True
        app.open_account("poison")
        with pytest.raises(ProjectionStoppedError):
            ProjectionRunner(app, Effects()).catch_up()
        with app.records.write_transaction() as connection:  # type: ignore[attr-defined]
            record_trouble(connection, "effects", "StoreBusyError: the lock was held")
        assert isinstance(check_error(app), ProjectionStoppedError)
        assert readside.report(app)["effects"]["error"].startswith("ValueError")

    def test_a_cause_that_cannot_be_recorded_is_logged_and_the_runner_goes_on(
        self, app: Bank, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without the tracking table the runner cannot even record why it cannot run: it says so
        in its log and keeps retrying; /ready's check answers the store's SchemaMissingError
        (503), not the driver's error."""
        tracking_table.drop(app.records.engine)  # type: ignore[attr-defined]
        app.open_account("no tracking")
        with (
            caplog.at_level(logging.INFO, "uwsgi_es.lifecycle"),
            following(ProjectionRunner(app, Balances())),
        ):
            eventually(lambda: logged(caplog, "projection_cause_unrecorded"))
        with pytest.raises(SchemaMissingError):
            readside.check(app)

    def test_a_projection_passes_over_the_events_of_another_application(
        self, app: Bank, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One database, two applications: runners apply the bank's events and pass over the
        others' (no class of theirs here), their positions moving past them. Balances and
        Openings declare what they handle (Openings fails if given anything else); Effects
        handles everything it can read and logs each unknown topic once. /ready stays ok."""
        ann = app.open_account("ann")
        app.records.append(foreign(3))  # type: ignore[attr-defined]
        first_foreign = app.records.last_position() - 2  # type: ignore[attr-defined]
        app.deposit(ann.id, 5)
        app.records.append(foreign(2))  # type: ignore[attr-defined]
        app.withdraw(ann.id, 2)
        with caplog.at_level(logging.INFO, "uwsgi_es.lifecycle"):
            for projection in (Balances(), Effects(), Openings()):
                assert ProjectionRunner(app, projection).catch_up() == 8
        assert check_error(app) is None
        assert read_model(app) == fold(app) == {str(ann.id): 3}
        assert effects(app) == (3, 3)
        last = app.records.last_position()  # type: ignore[attr-defined]
        for name in ("balances", "effects", "openings"):
            assert readside.report(app)[name]["position"] == last
        passed = logged(caplog, "projection_passed_over")
        assert [(e["projection"], e["topic"], e["position"]) for e in passed] == [
            ("effects", FOREIGN_TOPIC, first_foreign)
        ]
        assert "uwsgi_es.register_topic" in passed[0]["reason"]

    def test_a_handled_event_that_cannot_be_read_stops_the_projection_for_an_operator(
        self, app: Bank
    ) -> None:
        """A stored event of a handled topic that cannot be decoded stops the projection there,
        with a message saying the stored event must be repaired, not the projection's code; a
        corrupt row of a topic it does not handle is passed over."""
        ann = app.open_account("ann")
        app.records.append([StoredRecord(uuid4(), 1, FOREIGN_TOPIC, "{not json")])  # type: ignore[attr-defined]
        passed_over = app.records.last_position()  # type: ignore[attr-defined]
        app.records.append([StoredRecord(ann.id, 2, topic_of(BankAccount.Deposited), "{not json")])  # type: ignore[attr-defined]
        corrupt = app.records.last_position()  # type: ignore[attr-defined]
        with pytest.raises(ProjectionStoppedError) as stopped:
            ProjectionRunner(app, Balances()).catch_up()
        with pytest.raises(ProjectionStoppedError) as reported:
            readside.check(app)
        for message in (str(stopped.value), str(reported.value)):
            assert f"'balances' is stopped at position {corrupt}" in message
            assert "cannot be read" in message
            assert "an operator must repair it" in message
            assert "projection's code" not in message
        assert readside.report(app)["balances"]["position"] == passed_over

    def test_handles_names_event_classes(self, app: Bank) -> None:
        """A topic string where a class belongs is refused when the runner starts, with the fix."""

        class Mistaken(Balances):
            handles: ClassVar[Any] = ("uwsgi_es.example.domain:BankAccount.Opened",)

        with pytest.raises(ReadSideUnavailableError, match=r"Mistaken.handles .* DomainEvent classes"):
            ProjectionRunner(app, Mistaken())
