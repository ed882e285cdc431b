"""Every exception uwsgi_es raises.

One base class, ``UwsgiEsError``, so callers can catch everything of ours at once; subclasses also
inherit the matching builtin where one fits. Messages say what happened, why, and what to do; they
are for operators (logs, the CLI) and may name hosts, files and settings.

``public_reason`` is what an anonymous HTTP client may be told instead: short, stable, and free of
any detail of the deployment (no host, user, path, driver message or pid). An error whose message
is built only from such safe facts (``shows_message``) is shown whole: a projection's lag.

This module imports nothing of ours, so any module can import it without cycles.
"""

from __future__ import annotations

from typing import ClassVar


class UwsgiEsError(Exception):
    """Base class of every uwsgi_es error."""

    public_reason: ClassVar[str] = "the service cannot handle this request now"
    shows_message: ClassVar[bool] = False  # True: the message holds no deployment detail


class ConfigurationError(UwsgiEsError, ValueError):
    """A setting is missing or invalid; the message names the environment variable."""

    public_reason = "the application is not ready in this worker"


class ApplicationNotInitialisedError(UwsgiEsError, RuntimeError):
    """``get_application()`` was called before ``init_application()`` in this process."""

    public_reason = "the application is not ready in this worker"


class ApplicationAlreadyInitialisedError(UwsgiEsError, RuntimeError):
    """``init_application()`` was called twice in one process (events would be stored twice)."""


class ForkedApplicationError(UwsgiEsError, RuntimeError):
    """An application (or its connections) built in one process is used in a forked child."""

    public_reason = "the application is not ready in this worker"


class InitialisationFailedError(UwsgiEsError, RuntimeError):
    """This process tried to build its application and failed; requests answer 503 until it works."""

    public_reason = "the application is not ready in this worker"


class DuplicateSubscriptionError(UwsgiEsError, RuntimeError):
    """A second persistence policy for the same events in one process would store each twice."""


class ApplicationClosedError(UwsgiEsError, RuntimeError):
    """The application was closed; build a new one instead of reusing it."""

    public_reason = "the application is not ready in this worker"


class ConcurrencyError(UwsgiEsError):
    """An appended version already exists: another writer got there first. Nothing was stored."""

    public_reason = (
        "the resource was changed by other requests at the same time; nothing was stored, try again"
    )


class CommandRejectedError(UwsgiEsError):
    """A domain rule refused a command (e.g. insufficient funds). Nothing was stored."""


class AggregateNotFoundError(UwsgiEsError, KeyError):
    """No events are stored for the requested aggregate id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreUnavailableError(UwsgiEsError):
    """The record store could not be reached or answered with an operational error."""

    public_reason = "the event store is unavailable"


class QuorumLostError(StoreUnavailableError):
    """Too few replicas are alive for the consistency asked for (Cassandra's ``Unavailable``):
    nothing was written; it answers again by itself once enough replicas are back."""

    public_reason = "the event store cannot reach a quorum of its replicas; nothing was stored"


class OutcomeUnknownError(StoreUnavailableError):
    """A write was sent and no one can say whether it was stored (it got no answer, and neither
    did the repeats that would settle it). Unlike every other 5xx of ours, this one may
    have stored: 504. Cassandra raises it (it cannot keep an ``Idempotency-Key`` with its events,
    so the client must look before it sends the write again), and PostgreSQL when an append's
    connection broke unanswered and no server could be asked after (a primary killed mid-commit)."""

    public_reason = (
        "the event store did not confirm the write: it may have been stored; read it back before "
        "sending it again"
    )


class SchemaMissingError(StoreUnavailableError):
    """The store answers but its tables do not exist: run ``uwsgi-es migrate``."""


class ReadModelMissingError(SchemaMissingError):
    """A projection's read-model tables do not exist: ``uwsgi-es migrate --ini FILE`` creates them
    for the application the ini serves. The message names the projection, the tables and that fix
    only (no deployment detail), so clients are shown it."""

    public_reason = "a read model's tables do not exist; an operator must run uwsgi-es migrate"
    shows_message = True


class StoreBusyError(StoreUnavailableError):
    """Waiting for a lock held by another session took longer than the configured bound."""

    public_reason = "the event store is busy: waiting for a lock timed out"


class PoolExhaustedError(StoreBusyError):
    """Every pooled connection of this process stayed in use for ``UWSGI_ES_POOL_TIMEOUT``: the
    pool's own wait timed out (SQLAlchemy's ``TimeoutError``). Nothing was done."""

    public_reason = "the event store is busy: every database connection of this worker is in use"


class DeadlinePassedError(StoreBusyError):
    """The request had already waited its bound for the database (``UWSGI_ES_LOCK_TIMEOUT``, or
    SQLite's busy timeout, counted from its arrival), queued behind this worker's other requests:
    its next statement was not sent, so nothing more was done or stored."""


class StoreReadOnlyError(StoreUnavailableError):
    """The store answers reads but refuses writes (read-only file or database, disk full)."""

    public_reason = "the event store cannot accept writes"


class UnreadableEventError(UwsgiEsError):
    """A stored event cannot be decoded (invalid JSON, an unknown topic): the data needs repair."""

    public_reason = "a stored event cannot be read; an operator must repair it"


class UnsupportedOperationError(UwsgiEsError, NotImplementedError):
    """The configured store cannot do this (e.g. a global event feed on Cassandra)."""


class TopicError(UwsgiEsError, LookupError):
    """A topic names no event or aggregate class this process knows (registered ones only)."""


class DuplicateRequestError(UwsgiEsError):
    """Another request with the same Idempotency-Key was stored first; this one stored nothing.
    The web layer answers the first request's answer instead."""


class TranscodingError(UwsgiEsError, TypeError):
    """An event cannot be stored as its class declares: a field of a type with no registered
    transcoding, a value that does not fit, a missing upcast step. Raised when the class is first
    saved (or defined), naming the class and the field."""

    public_reason = "an event cannot be stored as its class declares; the application must be fixed"


class UwsgiUnavailableError(UwsgiEsError, RuntimeError):
    """uWSGI features were requested outside uWSGI, or without its master process."""


class ReadSideUnavailableError(ConfigurationError):
    """The store cannot feed projections (no global order of events, e.g. Cassandra), or the
    projection asked for is not one of the application's."""


class ProjectionLagError(UwsgiEsError):
    """A read asked for a position its projection had not reached within ``UWSGI_ES_READ_WAIT``.
    The message names the projection and the positions only, so clients are shown it."""

    public_reason = "the read model has not caught up yet"
    shows_message = True


class ProjectionStoppedError(UwsgiEsError):
    """A projection stopped at an event it could not process. The message names the projection,
    the position, the topic and the exception's type (never its text, which may hold data)."""

    public_reason = "a read model is stopped at an event it cannot process; an operator must fix it"
    shows_message = True


class ProjectionCannotRunError(UwsgiEsError):
    """A projection's runner cannot apply events for a lasting reason it recorded (its database
    keeps failing, a table it reads is missing); unlike a stop, no event is to blame and it
    resumes by itself once the cause is gone. The message names the projection and the error's
    type (never its text, which may hold hosts or paths), so clients are shown it."""

    public_reason = "a read model cannot be kept up to date now; an operator must look at its runner"
    shows_message = True


class ProjectionOperationError(UwsgiEsError):
    """An operator's command on a projection (``uwsgi-es park``, ``replay``, ``reset``) cannot be
    done as asked: the projection is not stopped, no such event is parked, the replayed event
    fails again. Nothing was changed; the message says what is the case and what to do."""


class TooManyWaitingReadsError(UwsgiEsError):
    """A read asked for a position its projection has not reached, and this worker already has
    ``UWSGI_ES_MAX_WAITING_READS`` reads waiting: it is refused at once rather than waiting, so
    waiting reads never take every request slot of a worker. The message names the bound and the
    setting only, so clients are shown it."""

    public_reason = "too many reads are waiting for the read model in this worker; retry shortly"
    shows_message = True
