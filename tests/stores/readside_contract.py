"""The read side's promises, on each SQL backend: a backend's module subclasses
``ReadSideContract`` and gives ``database_url`` (a new, migrated database).

Runners here run in the test process (the mule tests run them under uWSGI): exactly once, in feed
order, stopped at a failing event and resumed after the fix, read-your-writes bounded. What goes
wrong around them (tables missing, a database failing, another application's events) is in
``readside_faults_contract``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from sqlalchemy import func, select, text, update

from uwsgi_es.domain import resolve_topic
from uwsgi_es.errors import (
    ProjectionLagError,
    ProjectionOperationError,
    ProjectionStoppedError,
    ReadSideUnavailableError,
    TopicError,
)
from uwsgi_es.example.balances import Balances, balances_table
from uwsgi_es.example.domain import BankAccount, BankAccounts
from uwsgi_es.readside import ProjectionRunner, operations, projected
from uwsgi_es.readside import status as readside
from uwsgi_es.readside.rebuild import rebuild
from uwsgi_es.readside.waking import waker_for
from uwsgi_es.settings import Settings
from uwsgi_es.stores import unit_of_work

from ..apps.readside_app import Bank, Effects, effects_table


def fold(app: BankAccounts, up_to: int | None = None) -> dict[str, int]:
    """Each account's balance as its stored events say, up to the position ``up_to`` (all by
    default; another application's are left out)."""
    balances: dict[str, int] = {}
    for record in app.records.select_all(0, 1_000_000):  # type: ignore[attr-defined]
        if up_to is not None and (record.id or 0) > up_to:
            break
        try:
            resolve_topic(record.topic)
        except TopicError:
            continue
        event = app.event_store.from_record(record)
        key = str(event.originator_id)
        if isinstance(event, BankAccount.Opened):
            balances[key] = 0
        elif isinstance(event, BankAccount.Deposited):
            balances[key] += event.amount
        elif isinstance(event, BankAccount.Withdrawn):
            balances[key] -= event.amount
    return balances


def read_model(app: BankAccounts) -> dict[str, int]:
    with app.records.engine.connect() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(select(balances_table.c.account_id, balances_table.c.balance)).all()
    return {str(account): balance for account, balance in rows}


def effects(app: BankAccounts) -> tuple[int, int]:
    """(rows, distinct positions) of the effects table."""
    with app.records.engine.connect() as connection:  # type: ignore[attr-defined]
        return tuple(  # type: ignore[return-value]
            connection.execute(select(func.count(), func.count(effects_table.c.position.distinct()))).one()
        )


def rebuild_leftovers(app: BankAccounts) -> list[str]:
    """What a rebuild left of its new read model's place: PostgreSQL schemas, SQLite files."""
    engine = app.records.engine  # type: ignore[attr-defined]
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'uwsgi_es_rebuild%'")
            )
            return [str(name) for name in found.scalars()]
    database = app.records.path  # type: ignore[attr-defined]
    return [p.name for p in database.parent.glob(f"{database.name}.rebuild-*") if p.suffix != ".lock"]


class ReadSideContract:
    @pytest.fixture
    def app(self, database_url: str) -> Iterator[Bank]:
        settings = Settings(database_url=database_url, readside_batch=7, read_wait=0.3)
        app = Bank.from_settings(settings)
        for projection in (Balances, Effects):
            projection.metadata.create_all(app.records.engine)  # type: ignore[attr-defined]
        Effects.poisoned = False
        yield app
        Effects.poisoned = False
        app.close()

    def test_a_runner_applies_every_event_once_in_feed_order(self, app: Bank) -> None:
        accounts = [app.open_account(f"owner {i}").id for i in range(3)]
        for n in range(1, 31):
            app.deposit(accounts[n % 3], n)
        app.withdraw(accounts[0], 5)
        runner = ProjectionRunner(app, Balances())
        assert runner.catch_up() == 34  # in batches of 7
        assert runner.catch_up() == 0
        assert read_model(app) == fold(app)
        last = app.records.last_position()  # type: ignore[attr-defined]
        assert readside.report(app)["balances"] == {
            "position": last,
            "lag": 0,
            "stopped_at": None,
            "stopped_topic": None,
            "error": None,
        }
        assert readside.report(app)["effects"]["lag"] == 34  # events, not a difference of positions

    @pytest.mark.parametrize("batch", [1, 3, 50])
    def test_a_batch_leaves_the_read_model_as_one_event_at_a_time_would(
        self, app: Bank, database_url: str, batch: int
    ) -> None:
        """Balances applies a batch in two statements (inserts, then each account's net change):
        accounts opened and moved within one batch, several events of one account, withdrawals,
        in batches of 1, 3 and 50: balances and versions equal a fold of the events at the end of
        every step, not only at the end."""
        rng = random.Random(batch)
        balances: dict[UUID, int] = {}
        for _ in range(120):
            if not balances or rng.random() < 0.15:
                balances[app.open_account("batched").id] = 0
                continue
            account = rng.choice(list(balances))
            if balances[account] and rng.random() < 0.2:
                app.withdraw(account, 1)
                balances[account] -= 1
            else:
                amount = rng.randint(1, 50)
                app.deposit(account, amount)
                balances[account] += amount
        runner = ProjectionRunner(app, Balances(), Settings(database_url=database_url, readside_batch=batch))
        while runner.step():
            position = readside.report(app)["balances"]["position"]
            assert read_model(app) == fold(app, up_to=position)
        assert read_model(app) == fold(app)
        with app.records.engine.connect() as connection:  # type: ignore[attr-defined]
            versions = dict(
                connection.execute(select(balances_table.c.account_id, balances_table.c.version)).all()
            )
        assert versions == {account: app.get_account(account).version for account in balances}

    def test_operations_park_replay_and_reset_in_process(self, app: Bank) -> None:
        """park refuses a running projection; parks the event a stopped one is at, which then
        goes on; replay refuses an unparked position naming the parked ones, fails and keeps the
        event parked while the bug is there, applies it after the fix; reset empties the model
        and the runner rebuilds it equal to the fold."""
        account = app.open_account("before").id
        with pytest.raises(ProjectionOperationError, match="'effects' is not stopped at an event"):
            operations.park(app, "effects")
        app.open_account("poison")
        poison = app.records.last_position()  # type: ignore[attr-defined]
        app.deposit(account, 3)
        Effects.poisoned = True
        runner = ProjectionRunner(app, Effects())
        with pytest.raises(ProjectionStoppedError):
            runner.catch_up()
        assert [s.state for s in operations.status(app)] == ["running", "stopped"]
        assert operations.park(app, "effects").position == poison
        assert runner.catch_up() == 1  # the deposit after it
        effects_status = operations.status(app)[1]
        assert (effects_status.state, [p.position for p in effects_status.parked]) == ("running", [poison])
        with pytest.raises(ProjectionOperationError, match=f"parked there: {poison}"):
            operations.replay(app, "effects", poison + 1)
        with pytest.raises(ProjectionOperationError, match="failed again: ValueError"):
            operations.replay(app, "effects", poison)
        assert [p.position for p in operations.status(app)[1].parked] == [poison]
        Effects.poisoned = False
        operations.replay(app, "effects", poison)
        assert operations.status(app)[1].parked == []
        assert effects(app) == (3, 3)
        ProjectionRunner(app, Balances()).catch_up()
        assert operations.reset(app, "balances") == 2
        assert read_model(app) == {}
        assert operations.status(app)[0].lag == 3
        ProjectionRunner(app, Balances()).catch_up()
        assert read_model(app) == fold(app)

    def test_a_rebuild_fills_a_new_read_model_beside_the_live_one_and_switches_when_caught_up(
        self, app: Bank
    ) -> None:
        """The live balances, one made wrong on purpose (a bug's work), are what readers see all
        through the fill, while deposits and the live runner go on between its batches; a second
        rebuild is refused meanwhile; the switch applies what was stored after the fill's last
        batch and leaves the model equal to the fold and the live runner going on from its
        position; nothing of the new model's place is left behind."""
        accounts = [app.open_account(f"rebuilt {i}").id for i in range(5)]
        for i in range(40):
            app.deposit(accounts[i % 5], 1)
        live = ProjectionRunner(app, Balances())
        live.catch_up()
        with app.records.engine.begin() as connection:  # type: ignore[attr-defined]
            connection.execute(
                update(balances_table).where(balances_table.c.account_id == accounts[0]).values(balance=-1)
            )
        seen: list[dict[str, int]] = []

        def progress(applied: int, position: int) -> None:
            seen.append(read_model(app))
            with pytest.raises(ProjectionOperationError, match="'balances' is being rebuilt already"):
                rebuild(app, "balances")
            app.deposit(accounts[1], 1)  # after the fill's last batch too: the switch applies it
            live.catch_up()

        done = rebuild(app, "balances", progress)
        assert len(seen) > 3
        assert all(len(model) == 5 and model[str(accounts[0])] == -1 for model in seen)
        assert read_model(app) == fold(app)
        assert (done.rows, done.position) == (5, app.records.last_position())  # type: ignore[attr-defined]
        assert done.events == 45 + len(seen)
        assert operations.status(app)[0].lag == 0
        app.deposit(accounts[0], 5)
        assert live.catch_up() == 1
        assert read_model(app) == fold(app)
        assert rebuild_leftovers(app) == []

    def test_a_rebuild_that_fails_leaves_the_live_read_model_as_it_was(self, app: Bank) -> None:
        """The projection fails on an event in the rebuild: the command says where and why, the
        live read model and position are untouched, nothing of the new one is left behind."""
        app.open_account("poison")
        app.open_account("fine")
        ProjectionRunner(app, Effects()).catch_up()
        before = (effects(app), operations.status(app)[1].position)
        Effects.poisoned = True
        with pytest.raises(
            ProjectionOperationError, match=r"The rebuild of 'effects' stopped: .* at position"
        ):
            rebuild(app, "effects")
        assert (effects(app), operations.status(app)[1].position) == before
        assert rebuild_leftovers(app) == []

    def test_writes_answer_their_feed_position(self, app: Bank) -> None:
        account = app.open_account("ann")
        first = unit_of_work.current().position
        app.deposit(account.id, 3)
        second = unit_of_work.current().position
        assert first is not None
        assert second is not None
        assert second > first
        assert second == app.records.last_position()  # type: ignore[attr-defined]

    def test_two_runners_of_one_projection_never_apply_an_event_twice(self, app: Bank) -> None:
        """A mule and `uwsgi-es project` running the same projection by mistake: they take turns
        on its tracking record; each event is applied once."""
        account = app.open_account("twice")
        for _ in range(60):
            app.deposit(account.id, 1)
        runners = [ProjectionRunner(app, Effects()) for _ in range(3)]
        threads = [threading.Thread(target=r.catch_up) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert effects(app) == (61, 61)

    def test_a_failing_event_stops_the_projection_at_it_and_the_fix_resumes_it(self, app: Bank) -> None:
        """Events before the failing one are applied (the batch is replayed one by one), nothing
        after it; /ready's check names position and topic but not the exception's text; fixed
        and restarted, the runner resumes at that event and skips nothing."""
        before = [app.open_account(f"before {i}").id for i in range(3)]
        app.open_account("poison")
        poison_position = app.records.last_position()  # type: ignore[attr-defined]
        app.deposit(before[0], 10)
        Effects.poisoned = True
        runner = ProjectionRunner(app, Effects())
        with pytest.raises(ProjectionStoppedError) as stopped:
            runner.catch_up()
        assert effects(app) == (3, 3)
        with pytest.raises(ProjectionStoppedError) as reported:
            readside.check(app)
        for message in (str(stopped.value), str(reported.value)):
            assert f"stopped at position {poison_position}" in message
            assert "BankAccount.Opened" in message
            assert "ValueError" in message
            assert "Fix the projection's code" in message
            assert "secret detail" not in message
        assert readside.report(app)["effects"]["error"].startswith("ValueError: cannot process")
        with pytest.raises(ProjectionStoppedError):
            runner.catch_up()  # still stopped: nothing is skipped
        Effects.poisoned = False  # the fix, and a new runner (a restart)
        assert ProjectionRunner(app, Effects()).catch_up() == 2
        assert effects(app) == (5, 5)
        readside.check(app)
        assert readside.report(app)["effects"]["stopped_at"] is None

    def test_a_read_waits_for_the_position_it_asks_for(self, app: Bank) -> None:
        account = app.open_account("reader")
        app.deposit(account.id, 7)
        position = unit_of_work.current().position
        assert position is not None
        lagging = rf"'balances' is at position 0, before the position {position} asked for"
        with pytest.raises(ProjectionLagError, match=lagging), projected(app, Balances, position):
            pass
        runner = ProjectionRunner(app, Balances())
        catching_up = threading.Timer(0.1, runner.catch_up)
        catching_up.start()
        started = time.monotonic()
        try:
            with projected(app, Balances, position) as connection:
                assert Balances.one(connection, account.id) == {
                    "id": str(account.id),
                    "owner": "reader",
                    "balance": 7,
                    "version": 2,
                }
            assert time.monotonic() - started < 0.3
        finally:
            # Its last step still reads through the store's engine: done before the store closes,
            # or the connection it checks in goes to a disposed pool, closed by the garbage collector.
            catching_up.join(10)

    def test_a_following_runner_is_woken_by_an_append(self, app: Bank) -> None:
        """run() follows the feed; an append wakes it well before the poll interval (60 s here)."""
        runner = ProjectionRunner(app, Balances(), Settings(readside_poll_interval=60))
        stop = threading.Event()
        follower = threading.Thread(target=runner.run, args=(stop,))
        follower.start()
        try:
            time.sleep(0.3)  # it is now waiting
            account = app.open_account("woken")
            position = unit_of_work.current().position
            with projected(app, Balances, position or 0) as connection:
                assert Balances.one(connection, account.id) is not None
        finally:
            stop.set()
            follower.join(10)
        assert not follower.is_alive()

    def test_a_projection_that_is_not_declared_is_named(self, app: Bank) -> None:
        with pytest.raises(ReadSideUnavailableError, match=r"no projection named 'nope'.*balances, effects"):
            readside.projection_named(app, "nope")

    def test_the_waker_polls_when_it_cannot_listen(self, app: Bank) -> None:
        """Whatever the backend, a waker returns within its poll interval with nothing appended."""
        waker = waker_for(app.records.engine, 0.2)  # type: ignore[attr-defined]
        waker.arm()
        started = time.monotonic()
        waker.wait(threading.Event())
        assert 0.1 <= time.monotonic() - started < 2
        waker.close()
