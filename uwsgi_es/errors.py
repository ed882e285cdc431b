"""Every exception uwsgi_es raises.

One base class, ``UwsgiEsError``, so callers can catch everything of ours at once; subclasses also
inherit the matching builtin where one fits. Messages say what happened, why, and what to do.
This module imports nothing of ours, so any module can import it without cycles.
"""

from __future__ import annotations


class UwsgiEsError(Exception):
    """Base class of every uwsgi_es error."""


class ConfigurationError(UwsgiEsError, ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class ApplicationNotInitialisedError(UwsgiEsError, RuntimeError):
    """``get_application()`` was called before ``init_application()`` in this process."""


class ApplicationAlreadyInitialisedError(UwsgiEsError, RuntimeError):
    """``init_application()`` was called twice in one process (events would be stored twice)."""


class ForkedApplicationError(UwsgiEsError, RuntimeError):
    """An application (or its connections) built in one process is used in a forked child."""


class InitialisationFailedError(UwsgiEsError, RuntimeError):
    """This process tried to build its application and failed; requests answer 503 until it works."""


class DuplicateSubscriptionError(UwsgiEsError, RuntimeError):
    """A second persistence policy for the same events in one process would store each twice."""


class ApplicationClosedError(UwsgiEsError, RuntimeError):
    """The application was closed; build a new one instead of reusing it."""


class ConcurrencyError(UwsgiEsError):
    """An appended version already exists: another writer got there first. Nothing was stored."""


class CommandRejectedError(UwsgiEsError):
    """A domain rule refused a command (e.g. insufficient funds). Nothing was stored."""


class AggregateNotFoundError(UwsgiEsError, KeyError):
    """No events are stored for the requested aggregate id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreUnavailableError(UwsgiEsError):
    """The record store could not be reached or answered with an operational error."""


class SchemaMissingError(StoreUnavailableError):
    """The store answers but its tables do not exist: run ``uwsgi-es migrate``."""


class UnsupportedOperationError(UwsgiEsError, NotImplementedError):
    """The configured store cannot do this (e.g. a global event feed on Cassandra)."""


class TopicError(UwsgiEsError, LookupError):
    """A stored event's topic does not name an importable event class."""


class UwsgiUnavailableError(UwsgiEsError, RuntimeError):
    """uWSGI features were requested outside uWSGI, or without its master process."""
