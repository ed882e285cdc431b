"""uwsgi_es: one event-sourced application per worker process, built after the fork.

The front door: what a user calls is exported here. ``install`` (the uWSGI hook: one application
per worker, built after the fork), the event-sourcing core (``Aggregate``, ``Application``...), the
registry (``init_application``, ``get_application``...), the JSON web API (``JsonApi``, ``Request``,
``Response``), the settings and every error. The other servers' hooks are in ``uwsgi_es.servers``
(gunicorn, Celery; RQ jobs call ``get_application_lazily``), frameworks in
``uwsgi_es.integrations`` (Flask, Django, the eventsourcing library), the test harness in
``uwsgi_es.testing``. Importing it connects to nothing and works outside uWSGI.

The layers, from the bottom: ``runtime`` (process facts, the structured log) and the leaf modules
(``errors``, ``redaction``, ``settings``, ``transcoding``, ``domain``); ``stores`` and ``metrics``;
``snapshots`` and ``application`` (the core); ``lifecycle`` (the registry and the build) and
``servers`` (the hooks that call it); ``readside`` and ``web``; ``integrations``, ``example``,
``cli`` and ``doctor`` at the top. Every import points down
(``tests/unit/test_architecture.py`` holds it to that).
"""

from __future__ import annotations

import importlib.metadata

# First: in a lazy-apps worker, a stop request during the imports below ends it quietly (process's
# stop_at_once_while_importing, run as it is imported).
from uwsgi_es.runtime import process as _process  # noqa: F401

# isort: split
from uwsgi_es.application import Application, EventStore, PersistencePolicy, PubSub, Repository, pubsub
from uwsgi_es.domain import Aggregate, DomainEvent, register_topic
from uwsgi_es.errors import (
    AggregateNotFoundError,
    ApplicationAlreadyInitialisedError,
    ApplicationClosedError,
    ApplicationNotInitialisedError,
    CommandRejectedError,
    ConcurrencyError,
    ConfigurationError,
    DeadlinePassedError,
    DuplicateRequestError,
    DuplicateSubscriptionError,
    ForkedApplicationError,
    InitialisationFailedError,
    OutcomeUnknownError,
    PoolExhaustedError,
    ProjectionCannotRunError,
    ProjectionLagError,
    ProjectionOperationError,
    ProjectionStoppedError,
    QuorumLostError,
    ReadModelMissingError,
    ReadSideUnavailableError,
    SchemaMissingError,
    StoreBusyError,
    StoreReadOnlyError,
    StoreUnavailableError,
    TooManyWaitingReadsError,
    TopicError,
    TranscodingError,
    UnreadableEventError,
    UnsupportedOperationError,
    UwsgiEsError,
    UwsgiUnavailableError,
)
from uwsgi_es.lifecycle.registry import (
    close_application,
    get_application,
    get_application_lazily,
    init_application,
)
from uwsgi_es.servers.uwsgi import install
from uwsgi_es.settings import Settings
from uwsgi_es.transcoding import register_type
from uwsgi_es.web import BadRequestError, JsonApi, Request, Response


def _installed_version() -> str:
    """The installed distribution's version; from a source tree never installed (no metadata), a
    PEP 440 version that sorts before every release and says it is unknown."""
    try:
        return importlib.metadata.version("uwsgi_es")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()

__all__ = [
    "Aggregate",
    "AggregateNotFoundError",
    "Application",
    "ApplicationAlreadyInitialisedError",
    "ApplicationClosedError",
    "ApplicationNotInitialisedError",
    "BadRequestError",
    "CommandRejectedError",
    "ConcurrencyError",
    "ConfigurationError",
    "DeadlinePassedError",
    "DomainEvent",
    "DuplicateRequestError",
    "DuplicateSubscriptionError",
    "EventStore",
    "ForkedApplicationError",
    "InitialisationFailedError",
    "JsonApi",
    "OutcomeUnknownError",
    "PersistencePolicy",
    "PoolExhaustedError",
    "ProjectionCannotRunError",
    "ProjectionLagError",
    "ProjectionOperationError",
    "ProjectionStoppedError",
    "PubSub",
    "QuorumLostError",
    "ReadModelMissingError",
    "ReadSideUnavailableError",
    "Repository",
    "Request",
    "Response",
    "SchemaMissingError",
    "Settings",
    "StoreBusyError",
    "StoreReadOnlyError",
    "StoreUnavailableError",
    "TooManyWaitingReadsError",
    "TopicError",
    "TranscodingError",
    "UnreadableEventError",
    "UnsupportedOperationError",
    "UwsgiEsError",
    "UwsgiUnavailableError",
    "__version__",
    "close_application",
    "get_application",
    "get_application_lazily",
    "init_application",
    "install",
    "pubsub",
    "register_topic",
    "register_type",
]
