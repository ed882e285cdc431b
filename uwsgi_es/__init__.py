"""uwsgi_es: one event-sourced application per worker process, built after the fork.

The public API is re-exported here: the event-sourcing core (``Aggregate``, ``Application``...),
the registry (``init_application``, ``get_application``...), the settings and every error. Server
hooks are in ``uwsgi_es.servers`` (``uwsgi_es.hooks.install`` is the uWSGI one), frameworks in
``uwsgi_es.integrations``, the test harness in ``uwsgi_es.testing``. Importing it connects to
nothing and works outside uWSGI.
"""

from __future__ import annotations

import importlib.metadata

# First: in a lazy-apps worker, a stop request during the imports below ends it quietly (process's
# stop_at_once_while_importing, run as it is imported).
from uwsgi_es.lifecycle import process as _process  # noqa: F401

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
    DuplicateSubscriptionError,
    ForkedApplicationError,
    InitialisationFailedError,
    QuorumLostError,
    SchemaMissingError,
    StoreBusyError,
    StoreReadOnlyError,
    StoreUnavailableError,
    TranscodingError,
    UnreadableEventError,
    UwsgiEsError,
)
from uwsgi_es.lifecycle.registry import (
    close_application,
    get_application,
    get_application_lazily,
    init_application,
)
from uwsgi_es.settings import Settings
from uwsgi_es.transcoding import register_type


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
    "CommandRejectedError",
    "ConcurrencyError",
    "ConfigurationError",
    "DomainEvent",
    "DuplicateSubscriptionError",
    "EventStore",
    "ForkedApplicationError",
    "InitialisationFailedError",
    "PersistencePolicy",
    "PubSub",
    "QuorumLostError",
    "Repository",
    "SchemaMissingError",
    "Settings",
    "StoreBusyError",
    "StoreReadOnlyError",
    "StoreUnavailableError",
    "TranscodingError",
    "UnreadableEventError",
    "UwsgiEsError",
    "__version__",
    "close_application",
    "get_application",
    "get_application_lazily",
    "init_application",
    "pubsub",
    "register_topic",
    "register_type",
]
