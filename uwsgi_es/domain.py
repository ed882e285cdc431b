"""Domain events and aggregates: the pure-Python heart of an event-sourced model.

An aggregate never changes its state directly. A command method *triggers* an event; the event is
applied to the aggregate (``Event.apply``) and kept as pending until the application saves it.
Replaying the stored events through the same ``apply`` methods rebuilds the aggregate.

Event fields beyond the three headers are typed by their annotations and come back from the store
as those types (UUID, Decimal, datetime, Enum, tuples, nested dataclasses...; see
``uwsgi_es.transcoding``). An event class evolves with ``class_version`` and ``upcast_vN_vM``
static methods; a renamed or moved class keeps its old topics in ``topic_aliases``. Nothing here
does I/O.

Topics name classes in stored data, so they are resolved only against the classes this process
defined (every ``DomainEvent`` and ``Aggregate`` subclass registers itself) and the aliases
registered with ``register_topic``: a stored row can never make us import a module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from uwsgi_es.errors import TopicError, UwsgiEsError
from uwsgi_es.transcoding import upcasters_of

A = TypeVar("A", bound="Aggregate")


class EventSequenceError(UwsgiEsError):
    """An event does not follow the aggregate's current version: the stream is corrupt."""


class CreationEventError(UwsgiEsError, TypeError):
    """``Aggregate.create_from`` was given something other than a creation event class."""


def topic_of(cls: type) -> str:
    """The path of a class, ``module:Qual.Name``: how stored events name their class."""
    return f"{cls.__module__}:{cls.__qualname__}"


# Global state, admitted: every event and aggregate class this process defined, by topic.
_classes_by_topic: dict[str, type] = {}


def register_topic(topic: str, cls: type) -> None:
    """Read stored events whose topic is ``topic`` as ``cls``: for a class that was renamed or
    moved, register its old topic once (at import time of the module that defines it)."""
    _classes_by_topic[topic] = cls


def resolve_topic(topic: str) -> type:
    """The class a stored topic names, among those this process defined or registered."""
    try:
        return _classes_by_topic[topic]
    except (KeyError, TypeError):
        raise TopicError(
            f"Topic {topic!r} names no event or aggregate class of this application. Only classes "
            "the application defined (its modules are imported before the first read) are read from "
            "stored events; for a class that was renamed or moved, register its old topic: "
            "uwsgi_es.register_topic(old_topic, NewClass)."
        ) from None


class _Registered:
    """Registers each subclass's topic and aliases, so stored events of it can be read back."""

    topic_aliases: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _classes_by_topic[topic_of(cls)] = cls
        for alias in cls.__dict__.get("topic_aliases", ()):
            register_topic(alias, cls)


@dataclass(frozen=True)
class DomainEvent(_Registered):
    """Something that happened to one aggregate, at one version, at one time."""

    originator_id: UUID
    originator_version: int
    timestamp: datetime

    # The version of this class's stored state; raise it with an upcast_v<N>_v<N+1>(state) static
    # method for each step, and events stored by older code are upcast when they are read.
    class_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        upcasters_of(cls)  # a missing upcast step fails when the class is defined, not when read


def utcnow() -> datetime:
    return datetime.now(UTC)


class Aggregate(_Registered):
    """Base class of event-sourced aggregates.

    Subclasses declare nested event classes deriving from ``Aggregate.Event`` (and one creation
    event deriving from ``Aggregate.Created``) whose ``apply`` method changes the aggregate.
    """

    id: UUID
    version: int
    _pending: list[DomainEvent]

    # Snapshots of this class every this many events (None: UWSGI_ES_SNAPSHOT_INTERVAL; 0: never).
    snapshot_interval: ClassVar[int | None] = None
    # The version of this class's snapshot state; raise it with upcast_v<N>_v<N+1>(state) static
    # methods, as for events, when its attributes change.
    class_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        upcasters_of(cls)  # a missing upcast step fails when the class is defined

    @dataclass(frozen=True)
    class Event(DomainEvent):
        """An event of one aggregate; ``apply`` is the only place its state changes."""

        def apply(self, aggregate: Any) -> None:
            """Change ``aggregate`` to reflect this event. Override in each event class."""

        def mutate(self, aggregate: Aggregate | None) -> Aggregate:
            if aggregate is None:
                raise EventSequenceError(
                    f"Event {topic_of(type(self))} at version {self.originator_version} of "
                    f"{self.originator_id} comes before the aggregate's creation event."
                )
            if self.originator_version != aggregate.version + 1:
                raise EventSequenceError(
                    f"Event version {self.originator_version} does not follow version "
                    f"{aggregate.version} of aggregate {aggregate.id}."
                )
            self.apply(aggregate)
            aggregate.version = self.originator_version
            return aggregate

    @dataclass(frozen=True)
    class Created(Event):
        """The first event of every aggregate; it names the aggregate class to construct."""

        originator_topic: str

        def mutate(self, aggregate: Aggregate | None) -> Aggregate:
            if aggregate is not None:
                raise EventSequenceError(f"Aggregate {self.originator_id} is created twice.")
            if self.originator_version != 1:
                raise EventSequenceError(
                    f"Creation event of {self.originator_id} has version {self.originator_version}, not 1."
                )
            cls = resolve_topic(self.originator_topic)
            if not issubclass(cls, Aggregate):
                raise TopicError(f"Topic {self.originator_topic!r} does not name an Aggregate subclass.")
            created = cls.__new__(cls)
            created.id = self.originator_id
            created.version = 0
            created._pending = []
            self.apply(created)
            created.version = 1
            return created

    @classmethod
    def create_from(cls: type[A], event_class: type[Aggregate.Created], /, **event_fields: Any) -> A:
        """A new aggregate of this class, made by its first event.

        ``event_class`` is the creation event: a subclass of ``Aggregate.Created`` (usually one
        nested in this class), and ``event_fields`` its own fields (the headers, a new id, version 1,
        the time and this class's topic, are filled in). The event is applied, so the aggregate
        returned is at version 1, and kept pending: nothing is stored until the application saves
        the aggregate. A command method of your own usually wraps it, e.g.::

            @classmethod
            def open(cls, owner: str) -> BankAccount:
                return cls.create_from(cls.Opened, owner=owner)

        Its name leaves ``create`` free for a classmethod of your own (the eventsourcing library
        keeps ``_create`` private for the same reason). ``_create`` is the same method, under the
        name it had before it was public.
        """
        if not (isinstance(event_class, type) and issubclass(event_class, Aggregate.Created)):
            raise CreationEventError(
                f"{cls.__qualname__}.create_from needs the class of the aggregate's first event, a subclass "
                f"of Aggregate.Created; it got {_described(event_class)}. Declare one inside the "
                "aggregate (e.g. `@dataclass(frozen=True) class Opened(Aggregate.Created): owner: str`) "
                f"and pass it: {cls.__qualname__}.create_from({cls.__qualname__}.Opened, owner=...). Later "
                "events go through trigger_event."
            )
        event = event_class(
            originator_id=uuid4(),
            originator_version=1,
            timestamp=utcnow(),
            originator_topic=_topic_of_aggregate(cls),
            **event_fields,
        )
        aggregate = event.mutate(None)
        if not isinstance(aggregate, cls):
            raise TopicError(f"{event_class.__qualname__} built a {type(aggregate)}, not a {cls}.")
        aggregate._pending.append(event)
        return aggregate

    # The name before create_from was public.
    _create = create_from

    def trigger_event(self, event_class: type[Aggregate.Event], **event_fields: Any) -> None:
        """Make the next event of this aggregate, apply it, and keep it until it is saved."""
        event = event_class(
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=utcnow(),
            **event_fields,
        )
        event.mutate(self)
        self._pending.append(event)

    def collect_events(self) -> list[DomainEvent]:
        """Hand over the pending events (to be saved) and forget them."""
        events, self._pending = self._pending, []
        return events


_aggregate_topics: dict[type, str] = {}


def aggregate_classes() -> list[type[Aggregate]]:
    """Every aggregate class this process defined."""
    return [c for c in set(_classes_by_topic.values()) if isinstance(c, type) and issubclass(c, Aggregate)]


def _topic_of_aggregate(cls: type) -> str:
    try:
        return _aggregate_topics[cls]
    except KeyError:
        topic = _aggregate_topics[cls] = topic_of(cls)
        return topic


def _described(value: object) -> str:
    """What was passed instead of a creation event class, for the error."""
    if isinstance(value, type):
        later = issubclass(value, Aggregate.Event)
        return f"the class {value.__qualname__}" + (", a later event (an Aggregate.Event)" if later else "")
    return f"{type(value).__name__} {value!r}"


def replay(events: Sequence[DomainEvent], aggregate: Aggregate | None = None) -> Aggregate | None:
    """Rebuild an aggregate from its events, in version order (from ``aggregate``, e.g. a
    snapshot, when given); None when there is nothing."""
    for event in events:
        if not isinstance(event, Aggregate.Event):
            raise EventSequenceError(f"{topic_of(type(event))} is not an aggregate event.")
        aggregate = event.mutate(aggregate)
    return aggregate
