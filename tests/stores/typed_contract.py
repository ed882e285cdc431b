"""Typed events and schema evolution, through a real store: every backend's test class inherits
these (with ``store`` and ``make_store`` fixtures, as for ``RecordStoreContract``).

A property-based test round-trips generated events (UUID, Decimal, aware datetimes, dates, Enum,
tuples, nested frozen dataclasses, a registered custom type) through the store; the evolution
tests store events with an old class definition and read them with a newer one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uwsgi_es import Aggregate, EventStore, register_type
from uwsgi_es.domain import topic_of
from uwsgi_es.errors import TranscodingError, UnreadableEventError
from uwsgi_es.stores.base import RecordStore


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str


class Point:
    """A type msgspec does not know: stored through ``register_type``."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


register_type(Point, lambda p: [p.x, p.y], lambda stored: Point(*stored))


@dataclass(frozen=True)
class Rich(Aggregate.Event):
    reference: UUID
    price: Money
    when: datetime
    day: date
    colour: Colour
    sizes: tuple[int, ...]
    tags: list[str]
    ratio: float
    point: Point
    maybe: UUID | None = None


class Unstorable:
    pass


@dataclass(frozen=True)
class Refused(Aggregate.Event):
    thing: Unstorable


@dataclass(frozen=True)
class Loose(Aggregate.Event):
    anything: Any


def offsets() -> st.SearchStrategy[timezone]:
    return st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def aware_datetimes() -> st.SearchStrategy[datetime]:
    # fold only disambiguates wall times of zones with transitions; a fixed offset has none
    # and RFC 3339 text cannot carry it.
    return st.datetimes(min_value=datetime(1900, 1, 1), timezones=offsets()).map(lambda d: d.replace(fold=0))


decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None)
rich_events = st.builds(
    Rich,
    originator_id=st.uuids(),
    originator_version=st.integers(1, 2**31 - 1),
    timestamp=aware_datetimes(),
    reference=st.uuids(),
    price=st.builds(Money, decimals, st.text(max_size=3)),
    when=aware_datetimes(),
    day=st.dates(),
    colour=st.sampled_from(Colour),
    sizes=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4).map(tuple),
    tags=st.lists(st.text(max_size=20), max_size=3),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    point=st.builds(Point, st.integers(-1000, 1000), st.integers(-1000, 1000)),
    maybe=st.none() | st.uuids(),
)


def now() -> datetime:
    return datetime.now(UTC)


class TypedEventsContract:
    """Typed state and evolution on every store. Not collected itself (no Test prefix)."""

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        # One test body for every backend's subclass (the abstract-test-case pattern); each
        # example uses its own ids, and no example database is kept, so nothing leaks between them.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    )
    @given(event=rich_events)
    def test_generated_events_round_trip_exactly(self, store: RecordStore, event: Rich) -> None:
        """Every field comes back as the type and value it was saved with (repr compares
        Decimal's exponent and each datetime's offset, not only equality)."""
        event_store = EventStore(store)
        event = _fresh_id(event)
        event_store.put([event])
        (loaded,) = event_store.get(event.originator_id)
        assert type(loaded) is Rich
        assert repr(loaded) == repr(event)
        assert type(loaded.reference) is UUID
        assert type(loaded.price.amount) is Decimal

    def test_an_unsupported_type_is_refused_naming_the_class_and_field(self, store: RecordStore) -> None:
        event_store = EventStore(store)
        refused = Refused(uuid4(), 1, now(), Unstorable())
        with pytest.raises(TranscodingError, match=r"Refused field 'thing': Unstorable is not a type"):
            event_store.put([refused])
        loose = Loose(uuid4(), 1, now(), {"nested": Unstorable()})
        with pytest.raises(TranscodingError, match=r"Loose field 'anything' cannot be stored"):
            event_store.put([loose])
        assert event_store.get(refused.originator_id) == []
        assert event_store.get(loose.originator_id) == []

    def test_old_events_are_upcast_to_the_current_class_version(self, store: RecordStore) -> None:
        """v1 and v2 events stored by older code read as v3: each upcast step runs in order."""
        event_store = EventStore(store)
        parcel = uuid4()
        v1 = parcel_v1()
        event_store.put([v1(parcel, 1, now(), weight=2)])
        v2 = parcel_v2()
        event_store.put([v2(parcel, 2, now(), weight_grams=1500, carrier="post")])
        v3 = parcel_v3()
        first, second = event_store.get(parcel)
        assert type(first) is v3
        assert type(second) is v3
        assert (first.weight_grams, first.carrier, first.declared) == (2000, "unknown", Decimal("0.00"))
        assert (second.weight_grams, second.carrier, second.declared) == (1500, "post", Decimal("0.00"))
        event_store.put([v3(parcel, 3, now(), weight_grams=1, carrier="van", declared=Decimal("9.90"))])
        assert repr(event_store.get(parcel)[2].declared) == "Decimal('9.90')"

    def test_a_renamed_class_reads_its_old_topic(self, store: RecordStore) -> None:
        event_store = EventStore(store)
        parcel = uuid4()
        old = parcel_v1()
        event_store.put([old(parcel, 1, now(), weight=3)])

        @dataclass(frozen=True)
        class Dispatched(Aggregate.Event):
            topic_aliases = (topic_of(old),)
            weight: int

        (loaded,) = event_store.get(parcel)
        assert type(loaded) is Dispatched
        assert loaded.weight == 3

    def test_state_that_fits_no_upcast_is_unreadable_with_the_fix_named(self, store: RecordStore) -> None:
        """v1 state read by a v2 class whose upcast step was written wrong: no silent default."""
        event_store = EventStore(store)
        parcel = uuid4()
        event_store.put([parcel_v1()(parcel, 1, now(), weight=2)])

        @dataclass(frozen=True)
        class Shipped(Aggregate.Event):
            __qualname__ = "Parcel.Shipped"
            class_version = 2
            weight_grams: int
            carrier: str

            @staticmethod
            def upcast_v1_v2(state: dict[str, Any]) -> None:
                state["weight_grams"] = state.pop("weight") * 1000  # forgot the carrier

        with pytest.raises(UnreadableEventError, match=r"missing required field `carrier`.*upcast"):
            event_store.get(parcel)


def _fresh_id(event: Rich) -> Rich:
    """Hypothesis may repeat an id (and a version) across examples on the same database."""
    return replace(event, originator_id=uuid4())


# Three generations of one event class, all with the topic "<module>:Parcel.Shipped" (as if the
# module were edited between deployments). Defining one makes it the class that topic reads as.


def grams_and_carrier(state: dict[str, Any]) -> None:
    """v1 -> v2: kilograms became grams, and the carrier is recorded (unknown before)."""
    state["weight_grams"] = state.pop("weight") * 1000
    state["carrier"] = "unknown"


def parcel_v1() -> type[Any]:
    @dataclass(frozen=True)
    class Shipped(Aggregate.Event):
        __qualname__ = "Parcel.Shipped"
        weight: int  # kilograms

    return Shipped


def parcel_v2() -> type[Any]:
    @dataclass(frozen=True)
    class Shipped(Aggregate.Event):
        __qualname__ = "Parcel.Shipped"
        class_version = 2
        upcast_v1_v2 = staticmethod(grams_and_carrier)
        weight_grams: int
        carrier: str

    return Shipped


def parcel_v3() -> type[Any]:
    @dataclass(frozen=True)
    class Shipped(Aggregate.Event):
        __qualname__ = "Parcel.Shipped"
        class_version = 3
        upcast_v1_v2 = staticmethod(grams_and_carrier)
        weight_grams: int
        carrier: str
        declared: Decimal

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["declared"] = "0.00"

    return Shipped
