"""Typed event state: what an event's fields are stored as (JSON text), and how they come back.

An event's field annotations are its schema. State is written as plain JSON (readable by
projections, ``/events`` clients and SQL) and read back *by those annotations* with msgspec, so a
``UUID`` field returns a ``UUID``, not the ``str`` it is stored as. Built in: str, int, float,
bool, None, UUID, Decimal (stored as a string: exact), datetime, date, time, Enum, tuples, lists,
sets, dicts, unions, and nested (frozen) dataclasses. Other types are registered once with
``register_type(cls, encode, decode)``; an unregistered one is refused at the first save of the
event class, naming the class and the field.

Schema evolution: an event class declares ``class_version = N`` and static methods
``upcast_v1_v2(state)``, ``upcast_v2_v3(state)``... that change a stored state dict in place. State
written at an older version records it (``class_version`` in the JSON; absent means 1) and is
upcast on load before it is decoded. Renamed or moved classes keep reading their old topic through
``topic_aliases`` (or ``register_topic``), see ``uwsgi_es.domain``.

Global state, admitted: the registered types (written at import time of the modules that define
them) and one compiled codec per event class. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from uwsgi_es.errors import TranscodingError

VERSION_KEY = "class_version"
"""The key under which state written by a class at version > 1 records that version."""

_types: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {}


def register_type(cls: type, encode: Callable[[Any], Any], decode: Callable[[Any], Any]) -> None:
    """Store values of ``cls`` as ``encode(value)`` (anything JSON can hold, built-in types
    included) and read them back with ``decode(stored)``. Register at import time of the module
    that defines the type, in every process that reads or writes it."""
    if not isinstance(cls, type):
        raise TranscodingError(f"register_type needs a class, not {cls!r}.")
    _types[cls] = (encode, decode)
    _codecs.clear()  # a class refused before may be storable now
    _aggregate_codecs.clear()


def _encode_hook(value: Any) -> Any:
    for cls in type(value).__mro__:
        registered = _types.get(cls)
        if registered is not None:
            return registered[0](value)
    raise TypeError(_unsupported(type(value)))


def _decode_hook(cls: type, stored: Any) -> Any:
    registered = _types.get(cls)
    if registered is None:
        raise NotImplementedError
    return registered[1](stored)


def _unsupported(cls: type) -> str:
    name = cls.__qualname__
    return (
        f"{name} is not a type uwsgi_es can store; register it once with "
        f"uwsgi_es.register_type({name}, encode, decode), encode returning JSON-able values"
    )


_encoder = msgspec.json.Encoder(enc_hook=_encode_hook, decimal_format="string")
_untyped = msgspec.json.Decoder()


def _custom_types(info: msgspec.inspect.Type) -> Iterator[type]:
    """The classes in a field's type that msgspec stores only through a hook."""
    if isinstance(info, msgspec.inspect.CustomType):
        yield info.cls
    for name in ("item_type", "key_type", "value_type"):
        inner = getattr(info, name, None)
        if isinstance(inner, msgspec.inspect.Type):
            yield from _custom_types(inner)
    for inner in getattr(info, "item_types", ()) or getattr(info, "types", ()):
        yield from _custom_types(inner)
    if isinstance(info, msgspec.inspect.DataclassType):
        for f in info.fields:
            yield from _custom_types(f.type)


Upcaster = Callable[[dict[str, Any]], None]


def _upcast(codec: EventCodec | AggregateCodec, state: dict[str, Any], written: Any) -> None:
    """Bring ``state`` written at class version ``written`` to the codec's, one step at a time."""
    if not isinstance(written, int) or not 1 <= written <= codec.version:
        raise ValueError(
            f"state written at class_version {written!r}; {codec.name} is at {codec.version} "
            "(is this process running older code than the one that wrote it?)"
        )
    for upcast in codec.upcasters[written - 1 :]:
        upcast(state)


def _current_state(codec: EventCodec | AggregateCodec, stored: str | bytes) -> dict[str, Any]:
    """Stored state as a dict at the codec's class version (upcast if written at an older one)."""
    state = _untyped.decode(stored)
    if not isinstance(state, dict):
        raise ValueError(f"the stored state is {type(state).__name__}, not an object")
    written = state.pop(VERSION_KEY, 1)
    if written != codec.version:
        _upcast(codec, state, written)
    return state


class EventCodec:
    """The compiled schema of one event class: its state fields, version and upcasters."""

    def __init__(self, cls: type, header: frozenset[str]) -> None:
        self.cls = cls
        self.name = f"{cls.__module__}:{cls.__qualname__}"
        self.version: int = getattr(cls, "class_version", 1)
        self.fields = tuple(f.name for f in dataclasses.fields(cls) if f.name not in header)
        self.upcasters = upcasters_of(cls)
        try:
            info = msgspec.inspect.type_info(cls)
        except Exception as exc:  # unresolvable annotations: NameError, TypeError...
            raise TranscodingError(
                f"The fields of {self.name} cannot be read as a schema: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(info, msgspec.inspect.DataclassType):
            raise TranscodingError(f"{self.name} is not a dataclass; events must be dataclasses.")
        for f in info.fields:
            for custom in _custom_types(f.type):
                if custom not in _types and not any(c in _types for c in custom.__mro__):
                    raise TranscodingError(f"{self.name} field {f.name!r}: {_unsupported(custom)}.")

    def encode(self, event: Any) -> str:
        state = {name: getattr(event, name) for name in self.fields}
        if self.version > 1:
            state[VERSION_KEY] = self.version
        try:
            return _encoder.encode(state).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            raise TranscodingError(
                f"{self.name} field {self._failing_field(state)!r} cannot be stored: {exc}."
            ) from exc

    def _failing_field(self, state: dict[str, Any]) -> str:
        for name, value in state.items():
            try:
                _encoder.encode(value)
            except (TypeError, msgspec.EncodeError):
                return name
        return "?"

    def decode(self, headers: dict[str, Any], stored: str | bytes) -> Any:
        """The event from its header values and stored state: upcast, then typed by the fields.
        Raises ``ValueError`` (msgspec's errors are ValueErrors) naming what does not fit."""
        state = _current_state(self, stored)
        state.update(headers)
        return msgspec.convert(state, self.cls, dec_hook=_decode_hook)


class AggregateCodec:
    """An aggregate's state as a snapshot: its attributes (all but ``id``, ``version`` and the
    pending events) as JSON, read back by the class's annotations where it has them.

    Aggregates set their attributes in ``apply`` methods, annotated or not, so a snapshot is only
    trusted if it reads back equal to the aggregate it was taken of (``encode`` checks, every
    time): one that would not (an unannotated ``UUID`` attribute comes back a ``str``) is not
    taken, and ``unfaithful`` names the attributes to annotate. Versions and upcasts work as for
    events: ``class_version`` and ``upcast_vN_vM`` on the aggregate class.
    """

    header = frozenset({"id", "version", "_pending"})

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.name = f"{cls.__module__}:{cls.__qualname__}"
        self.version: int = getattr(cls, "class_version", 1)
        self.upcasters = upcasters_of(cls)
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:  # unresolvable annotations: NameError, TypeError...
            raise TranscodingError(
                f"The annotations of {self.name} cannot be read: {type(exc).__name__}: {exc}"
            ) from exc
        self.types = {
            name: hint
            for name, hint in hints.items()
            if name not in self.header and typing.get_origin(hint) is not typing.ClassVar
        }
        self.unfaithful: list[str] = []

    def encode(self, aggregate: Any) -> str | None:
        """The snapshot state, or None when it would not read back equal (see ``unfaithful``)."""
        attributes = {k: v for k, v in vars(aggregate).items() if k not in self.header}
        state = dict(attributes)
        if self.version > 1:
            state[VERSION_KEY] = self.version
        try:
            encoded = _encoder.encode(state).decode()
            back = self._typed(_untyped.decode(encoded))
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            self.unfaithful = [f"{type(exc).__name__}: {exc}"]
            return None
        if back != attributes:
            self.unfaithful = sorted(k for k in attributes if back.get(k, attributes) != attributes[k])
            return None
        return encoded

    def decode(self, aggregate_id: Any, version: int, stored: str | bytes) -> Any:
        """The aggregate a snapshot holds, upcast to the current class version."""
        state = _current_state(self, stored)
        aggregate: Any = object.__new__(self.cls)
        aggregate.__dict__.update(self._typed(state))
        aggregate.id, aggregate.version, aggregate._pending = aggregate_id, version, []
        return aggregate

    def _typed(self, state: dict[str, Any]) -> dict[str, Any]:
        types = self.types
        for name, value in state.items():
            hint = types.get(name)
            if hint is not None:
                state[name] = msgspec.convert(value, hint, dec_hook=_decode_hook)
        return state


def upcasters_of(cls: type) -> list[Upcaster]:
    """``upcast_v1_v2`` ... up to the class's version; a missing step is an error at import."""
    version: int = getattr(cls, "class_version", 1)
    if not isinstance(version, int) or version < 1:
        raise TranscodingError(f"{cls.__qualname__}.class_version must be an int >= 1, not {version!r}.")
    steps = []
    for old in range(1, version):
        name = f"upcast_v{old}_v{old + 1}"
        upcast = getattr(cls, name, None)
        if not callable(upcast):
            raise TranscodingError(
                f"{cls.__qualname__} is at class_version {version} but has no {name}(state) "
                f"static method to bring version {old} state to version {old + 1}."
            )
        steps.append(upcast)
    return steps


_codecs: dict[type, EventCodec] = {}
_codecs_lock = threading.Lock()


_aggregate_codecs: dict[type, AggregateCodec] = {}


def aggregate_codec_for(cls: type) -> AggregateCodec:
    """The snapshot codec of an aggregate class, compiled on first use."""
    codec = _aggregate_codecs.get(cls)
    if codec is None:
        with _codecs_lock:
            codec = _aggregate_codecs[cls] = AggregateCodec(cls)
    return codec


def codec_for(cls: type, header: frozenset[str]) -> EventCodec:
    """The codec of an event class, compiled on first use (after every module has been imported,
    so annotations naming later classes resolve)."""
    codec = _codecs.get(cls)
    if codec is None:
        with _codecs_lock:
            codec = _codecs[cls] = EventCodec(cls, header)
    return codec
