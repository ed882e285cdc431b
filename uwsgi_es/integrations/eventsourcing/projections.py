"""The eventsourcing library's projections in uWSGI mules (or ``uwsgi-es project NAME``), one per
process, built after the fork.

The ini names them (``UWSGI_ES_PROJECTIONS``, in the order of its ``mule = %b-es-mule.py`` lines):

- ``module:Name`` for an ``EventSourcedProjection`` (a process application: its events and its
  tracking record written in one transaction by the library);
- ``module:Name=module:View`` for a ``Projection`` and the ``TrackingRecorder`` class of its
  materialised view, as the library's ``ProjectionRunner`` takes them.

Why not the library's own runners: they start two threads in ``__init__`` and follow the
recorder's ``subscribe()``, which SQLite does not have (``NotImplementedError``) and which on
PostgreSQL waits with no timeout for a NOTIFY that may be lost (eventsourcing issue #305). This
runner does what they do, the library's way (the application's mapper decodes, ``process_event``
gets the library's ``Tracking``, the view's tracking record is the position), in the mule's own
thread, reading ``select_notifications`` after the position every poll interval at most
(``UWSGI_ES_READSIDE_POLL_INTERVAL``): a lost wake-up costs one interval, on every persistence
module with a notification log (SQLite, PostgreSQL, eventsourcing_sqlalchemy, and ours for
Cassandra).

A ``process_event`` that raises stops the runner at that event: it is logged with its position,
nothing after it is processed, and it is tried again after a back-off growing to 30 s (a bug needs
the code fixed and the mule restarted; it resumes there, from the view's tracking record).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from eventsourcing.application import Application as LibraryApplication
from eventsourcing.persistence import (
    InfrastructureFactory,
    InfrastructureFactoryError,
    PersistenceError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.projection import EventSourcedProjection, Projection
from eventsourcing.system import System
from eventsourcing.utils import Environment

from uwsgi_es.errors import ConfigurationError, UnsupportedOperationError
from uwsgi_es.integrations.eventsourcing.building import construct, secrets, translate
from uwsgi_es.metrics import recorder
from uwsgi_es.readside.status import wait_for_position
from uwsgi_es.runtime import log, process
from uwsgi_es.settings import Settings
from uwsgi_es.stores import deadlines

MAX_BACKOFF = 30.0
WAIT_STEP_SECONDS = 0.01  # how often a read waiting for a position looks at the view's again
_T = TypeVar("_T")
SETTING = "UWSGI_ES_PROJECTIONS"


@dataclass(frozen=True)
class Declared:
    """One projection the ini names: its class, and its view's class (None for an
    ``EventSourcedProjection``, whose recorder is its view); or one follower of a ``System`` the
    ini names (``follower``: its name there)."""

    projection: str
    view: str | None = None
    follower: str | None = None

    @property
    def name(self) -> str:
        """The name a runner answers to (``uwsgi-es project NAME``): the class's ``name``."""
        if self.follower is not None:
            return self.follower
        return str(getattr(self.projection_class(), "name", "") or self.projection.rpartition(":")[2])

    def projection_class(self) -> type[Any]:
        if self.follower is not None:
            return self.system().follower_cls(self.follower)
        cls = _load(self.projection)
        if not (isinstance(cls, type) and issubclass(cls, Projection | EventSourcedProjection)):
            raise ConfigurationError(
                f"{SETTING}: {self.projection} is not a projection of the eventsourcing library "
                "(a subclass of eventsourcing.projection.Projection or EventSourcedProjection, or a "
                "System of process applications)."
            )
        if issubclass(cls, Projection) and self.view is None:
            raise ConfigurationError(
                f"{SETTING}: {self.projection} is a Projection, which needs its view's class: write "
                f"{self.projection}=module:View (a TrackingRecorder subclass for your persistence module)."
            )
        return cls

    def view_class(self) -> type[TrackingRecorder] | None:
        if self.view is None:
            return None
        cls = _load(self.view)
        if not (isinstance(cls, type) and issubclass(cls, TrackingRecorder)):
            raise ConfigurationError(
                f"{SETTING}: {self.view} is not a TrackingRecorder class (a projection's view)."
            )
        return cls

    def system(self) -> System:
        found = _load(self.projection)
        if not isinstance(found, System):
            raise ConfigurationError(f"{SETTING}: {self.projection} is not an eventsourcing System.")
        return found

    def leaders(self) -> dict[str, type[Any]]:
        """The applications this one follows, by name: a system follower's leaders; {} for a
        projection, which follows the application the process hosts."""
        if self.follower is None:
            return {}
        system = self.system()
        return {name: system.get_app_cls(name) for name in system.follows[self.follower]}


def declared(raw: str) -> list[Declared]:
    """The projections ``raw`` (the setting's text, whose form the settings checked) names, a
    ``System`` standing for each of its followers in its order (imported to find out)."""
    found = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        projection, _, view = (side.strip() for side in item.partition("="))
        named_object = None if view else _load(projection)
        if isinstance(named_object, System):
            found += [Declared(projection, None, follower) for follower in named_object.followers]
        else:
            found.append(Declared(projection, view or None))
    return found


def projection_names(settings: Settings) -> list[str]:
    """The names of the projections the setting declares, in order (one runner mule each)."""
    return [item.name for item in declared(settings.projections)]


def _load(name: str) -> Any:
    module, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{SETTING}: cannot import {name} ({exc}).") from exc
    return found


def _view_env(cls: type[Any], overrides: dict[str, str]) -> Environment:
    """The environment the library gives a projection's view: the process's, under the projection's
    name as a prefix (BALANCES_SQLITE_DBNAME), as its ``ProjectionRunner`` builds it."""
    return Environment(cls.name, {**os.environ, **overrides})


@dataclass(frozen=True)
class Built:
    """A projection built in this process, the recorder that keeps its position, and what closes
    the connections it opened (its own application's, or its view's infrastructure factory's)."""

    projection: Any
    view: TrackingRecorder
    close: Callable[[], None]


def build(item: Declared, *, create_tables: bool = False) -> Built:
    """The projection and the recorder that keeps its position, built in this process; tables are
    created only when asked (``uwsgi-es migrate``)."""
    cls = item.projection_class()
    overrides = {"CREATE_TABLE": "y" if create_tables else "n"}
    if issubclass(cls, EventSourcedProjection):
        projection = construct(cls, overrides)
        return Built(projection, projection.recorder, projection.close)
    view_class = item.view_class()
    try:
        factory = InfrastructureFactory.construct(_view_env(cls, overrides))
    except (InfrastructureFactoryError, ValueError, ImportError) as exc:
        raise ConfigurationError(_cannot_build(item, exc)) from exc
    try:
        expected = getattr(factory, "tracking_recorder_class", None)
        if isinstance(expected, type) and view_class is not None and not issubclass(view_class, expected):
            raise ConfigurationError(
                f"{SETTING}: the view {item.view} is not a {expected.__qualname__}, the tracking "
                f"recorder of {factory.env.get('PERSISTENCE_MODULE') or 'this persistence module'}: "
                "name the view class written for the persistence module this projection uses."
            )
        view = factory.tracking_recorder(view_class)
    except (AssertionError, TypeError, ValueError) as exc:
        factory.close()
        raise ConfigurationError(_cannot_build(item, exc)) from exc
    except BaseException:
        factory.close()
        raise
    return Built(cls(view=view), view, factory.close)


def _cannot_build(item: Declared, exc: BaseException) -> str:
    return (
        f"{SETTING}: the library cannot build the view of {item.projection} from this environment "
        f"({type(exc).__name__}: {exc}); the view must be a TrackingRecorder of the persistence "
        "module PERSISTENCE_MODULE names (or <NAME>_PERSISTENCE_MODULE, the projection's own)."
    )


def named(settings: Settings, name: str) -> Declared:
    """The declared projection called ``name``."""
    items = declared(settings.projections)
    for item in items:
        if item.name == name:
            return item
    known = ", ".join(item.name for item in items) or f"none ({SETTING} is empty)"
    raise ConfigurationError(f"No projection named {name!r} is declared; declared: {known}.")


class LibraryProjectionRunner:
    """Runs one of the library's projections over one library application's notification log."""

    def __init__(self, app: Any, item: Declared, settings: Settings) -> None:
        if not isinstance(app, LibraryApplication):
            raise ConfigurationError(
                f"{SETTING}: {type(app).__qualname__} is not an eventsourcing Application (a "
                "DCBApplication?); uwsgi_es runs projections of applications with a notification "
                "log only. Run a DCB projection with the library's own runner, in a process of its own."
            )
        self.app = app
        self.built = build(item)
        self.projection, self.view = self.built.projection, self.built.view
        self.name = str(type(self.projection).name)
        self.topics: Sequence[str] = tuple(getattr(self.projection, "topics", ()) or ())
        self.batch = settings.readside_batch
        self.poll_interval = settings.readside_poll_interval
        # The applications followed: the hosted one, or a system follower's leaders (those other
        # than the hosted one built here, to read their notification logs, and closed with it).
        self.leaders, self._built_here = [], []
        for name, cls in (item.leaders() or {app.name: type(app)}).items():
            if name == app.name:
                self.leaders.append(app)
            else:
                self._built_here.append(construct(cls))
                self.leaders.append(self._built_here[-1])
        # The last notification processed of each leader (absent: read the view's tracking record).
        self.positions: dict[str, int] = {}

    @property
    def position(self) -> int | None:
        """The position in the first leader's log (the hosted application's, for a projection)."""
        return self.positions.get(self.leaders[0].name)

    def step(self) -> int:
        """Process the next notifications of each leader after its position; return how many."""
        return sum(self._step(leader) for leader in self.leaders)

    def _step(self, leader: Any) -> int:
        """When the leader's last notifications are of topics the projection does not follow, its
        tracking record moves past them too (a read asking for a write's position waits for
        nothing then)."""
        position = self.positions.get(leader.name)
        if position is None:
            position = self.positions[leader.name] = self.view.max_tracking_id(leader.name) or 0
        last = leader.recorder.max_notification_id() or 0  # read first: nothing up to it is missed
        if last <= position:
            return 0
        notifications = leader.recorder.select_notifications(
            start=position, limit=self.batch, stop=last, topics=self.topics, inclusive_of_start=False
        )
        for notification in notifications:
            event = leader.mapper.to_domain_event(notification)
            self.projection.process_event(event, Tracking(leader.name, notification.id))
            position = self.positions[leader.name] = notification.id
            recorder.projected(self.name, 1)
        if len(notifications) < self.batch:
            position = self.positions[leader.name] = last  # the rest up to ``last``: other topics
        if (self.view.max_tracking_id(leader.name) or 0) < position:
            self.view.insert_tracking(Tracking(leader.name, position))
        return len(notifications)

    def catch_up(self) -> int:
        """Process every notification stored now; return how many."""
        total = 0
        while applied := self.step():
            total += applied
        return total

    def run(self, stop: threading.Event) -> None:
        """Follow the notification log until ``stop`` is set, never raising: a failure is logged
        and tried again after a back-off (from the view's tracking record: nothing is skipped)."""
        log.emit(
            "projection_runner",
            role=process.role(),
            pid=os.getpid(),
            projection=self.name,
            application=type(self.app).__qualname__,
            kind="eventsourcing",
        )
        backoff = 0.0
        while not stop.is_set():
            try:
                applied = self.step()
            except Exception as exc:
                backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                log.emit(
                    "projection_waiting",
                    logging.ERROR,
                    exc_info=not isinstance(exc, PersistenceError),
                    projection=self.name,
                    after=self.position,
                    error=f"{type(exc).__name__}: {exc}",
                    consequence=f"nothing after it is processed; tried again in {backoff:g}s",
                )
                self.positions.clear()  # resume from what the view recorded
                stop.wait(backoff)
                continue
            backoff = 0.0
            if applied == 0:
                stop.wait(self.poll_interval)

    def close(self) -> None:
        self.built.close()
        for leader in self._built_here:
            leader.close()


# The views a worker reads, built in it on first use: (pid, application) -> name -> Built.
_views: dict[tuple[int, int], dict[str, Built]] = {}


def view_of(app: LibraryApplication[Any], name: str, settings: Settings) -> Built:
    """The declared projection ``name`` built in this process for reading (once; closed with the
    application by ``close_views``). ``UnsupportedOperationError`` (404) when none is declared
    by that name."""
    views = _views.setdefault((os.getpid(), id(app)), {})
    built = views.get(name)
    if built is None:
        if name not in projection_names(settings):
            raise UnsupportedOperationError(
                f"The read model {name!r} is not kept on this deployment: {SETTING} declares no "
                "projection by that name."
            )
        made = _translated(app, lambda: build(named(settings, name)))
        built = views.setdefault(name, made)
        if built is not made:  # another request of this worker built it meanwhile
            made.close()
    return built


def close_views(app: LibraryApplication[Any]) -> None:
    """Close the views this process built for ``app`` (with the application: never inherited ones)."""
    for built in _views.pop((os.getpid(), id(app)), {}).values():
        built.close()


def tracked(app: LibraryApplication[Any], built: Built) -> int:
    """The position of the last notification the projection has applied, or passed over."""
    return int(_translated(app, lambda: built.view.max_tracking_id(app.name) or 0))


def _follows(item: Declared, name: str) -> bool:
    leaders = item.leaders()
    return not leaders or name in leaders


def report(app: LibraryApplication[Any], settings: Settings) -> dict[str, dict[str, int]]:
    """Each declared projection's position and lag (notifications stored after it), read now:
    for ``/ready``, ``/worker`` and ``/metrics``. A view whose tables are missing raises
    ``SchemaMissingError`` naming ``uwsgi-es migrate``."""
    # Those that follow the application served here (a system's other followers follow others).
    names = [item.name for item in declared(settings.projections) if _follows(item, app.name)]
    if not names:
        return {}
    last = int(_translated(app, lambda: app.recorder.max_notification_id() or 0))
    found = {}
    for name in names:
        position = tracked(app, view_of(app, name, settings))
        found[name] = {"position": position, "lag": max(0, last - position)}
    return found


@contextmanager
def read_view(
    app: LibraryApplication[Any], name: str, at_least: int, settings: Settings
) -> Iterator[TrackingRecorder]:
    """The view of the declared projection ``name`` once it has applied position ``at_least``
    (``X-Min-Position``: a write's ``X-Event-Position``), waiting at most ``UWSGI_ES_READ_WAIT``
    without holding up the worker's other requests; then ``ProjectionLagError`` (503) naming the
    lag. At most ``UWSGI_ES_MAX_WAITING_READS`` reads of a worker wait at once."""
    built = view_of(app, name, settings)
    if at_least > 0:
        with deadlines.not_counted():  # waiting for the projection is not waiting for the database
            wait_for_position(name, at_least, lambda: tracked(app, built), settings, WAIT_STEP_SECONDS)
    yield built.view


def _translated(app: LibraryApplication[Any], call: Callable[[], _T]) -> _T:
    """``call()``, the library's persistence errors as ours (503, or a missing table naming
    ``uwsgi-es migrate``), scrubbed of the configuration's secrets."""
    try:
        return call()
    except PersistenceError as exc:
        raise translate(exc, f"{app.name}'s read side", secrets(app.env)) from exc
