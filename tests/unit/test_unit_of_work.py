"""One unit of work per context: what a request's operations record stays its own, joining a
transaction keeps what was recorded inside, and a fresh unit per request starts empty."""

from __future__ import annotations

import threading

from uwsgi_es.stores import unit_of_work


def test_a_fresh_unit_starts_empty_and_the_one_before_comes_back() -> None:
    unit_of_work.stored_at(7)
    with unit_of_work.begin():
        assert unit_of_work.current() == unit_of_work.UnitOfWork()
        unit_of_work.stored_at(9)
        unit_of_work.committing(True)
        assert (unit_of_work.current().position, unit_of_work.current().committing) == (9, True)
    assert unit_of_work.current().position == 7
    unit_of_work.stored_at(None)


def test_joining_a_transaction_is_scoped_and_keeps_what_was_recorded_inside() -> None:
    datastore, other, connection = object(), object(), object()
    with unit_of_work.begin():
        with unit_of_work.joining(datastore, connection):
            assert unit_of_work.current().joins(datastore) is connection
            assert unit_of_work.current().joins(other) is None
            unit_of_work.stored_at(42)
        assert unit_of_work.current().joins(datastore) is None
        assert unit_of_work.current().position == 42


def test_contexts_never_share_a_unit() -> None:
    """A thread records its own position; this context's unit is untouched (the object is never
    mutated, so even a context copied from this one could not change it)."""
    seen: list[int | None] = []
    with unit_of_work.begin():
        unit_of_work.stored_at(1)
        before = unit_of_work.current()

        def other() -> None:
            unit_of_work.stored_at(2)
            seen.append(unit_of_work.current().position)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == [2]
        assert unit_of_work.current() is before
        assert before.position == 1
