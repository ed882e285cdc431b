"""One table from our errors to HTTP answers, shared by every web layer (the JSON API, the Flask
extension, the Django example), so a domain refusal is a 409 wherever it is served.

A 4xx tells the client about its own request, so its body is the error's message (a domain rule,
an unknown id). A 5xx is about the deployment, so its body is the error's ``public_reason`` only:
short and stable, no host, user, file, driver message or pid. The details go to the log instead
(``log_refusal``), rate-limited so an outage does not flood it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from uwsgi_es.errors import (
    AggregateNotFoundError,
    ApplicationClosedError,
    ApplicationNotInitialisedError,
    CommandRejectedError,
    ConcurrencyError,
    ConfigurationError,
    ForkedApplicationError,
    InitialisationFailedError,
    OutcomeUnknownError,
    ProjectionCannotRunError,
    ProjectionLagError,
    ProjectionStoppedError,
    StoreUnavailableError,
    TooManyWaitingReadsError,
    TranscodingError,
    UnreadableEventError,
    UnsupportedOperationError,
    UwsgiEsError,
)
from uwsgi_es.web.text import client_text

log = logging.getLogger("uwsgi_es.web")

# (error class, status): the first matching row wins, so subclasses come before their bases.
STATUS_OF: tuple[tuple[type[UwsgiEsError], int], ...] = (
    (AggregateNotFoundError, 404),
    (UnsupportedOperationError, 404),  # not a server fault: this deployment has no such resource
    (CommandRejectedError, 409),
    (ConcurrencyError, 409),
    (OutcomeUnknownError, 504),  # the one 5xx after which the write may be stored
    (StoreUnavailableError, 503),
    (UnreadableEventError, 503),
    (TranscodingError, 503),
    (ProjectionLagError, 503),
    (TooManyWaitingReadsError, 503),
    (ProjectionStoppedError, 503),
    (ProjectionCannotRunError, 503),
    (InitialisationFailedError, 503),
    (ApplicationNotInitialisedError, 503),
    (ForkedApplicationError, 503),
    (ApplicationClosedError, 503),
    (ConfigurationError, 503),
)


@dataclass(frozen=True)
class ErrorAnswer:
    """What to answer for an error: status, the body's message, and whether to say Retry-After."""

    status: int
    message: str
    retry_after: bool


def answer_for(error: BaseException) -> ErrorAnswer | None:
    """The answer for one of our errors; None for anything else (a bug: answer 500, log it)."""
    status = next((code for cls, code in STATUS_OF if isinstance(error, cls)), None)
    if status is None or not isinstance(error, UwsgiEsError):
        return None
    if status < 500:
        message = error.public_reason if isinstance(error, ConcurrencyError) else str(error)
        return ErrorAnswer(status, message, retry_after=False)
    message = str(error) if error.shows_message else public_reason(error)
    lasting = isinstance(
        error, UnreadableEventError | TranscodingError | ProjectionStoppedError
    )  # retrying will not help
    return ErrorAnswer(status, message, retry_after=not lasting)


def public_reason(error: UwsgiEsError) -> str:
    """The stable reason; a failed build says why it failed when the cause has a reason of its own
    (an unreachable database is "the event store is unavailable", not a vague "not ready")."""
    cause = error.__cause__
    if isinstance(error, InitialisationFailedError) and isinstance(cause, StoreUnavailableError):
        return cause.public_reason
    return error.public_reason


class _Throttle:
    """At most one log line per kind of error per interval, with the count of those left out."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def admit(self, key: str) -> int | None:
        """None to stay quiet; else how many were suppressed since the last admitted one."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (0.0, 0))
            if now - last < self.interval:
                self._last[key] = (last, suppressed + 1)
                return None
            self._last[key] = (now, 0)
            return suppressed


_throttle = _Throttle()


def log_refusal(method: str, path: str, status: int, error: BaseException) -> None:
    """Log why a request got a 5xx, with the details its body leaves out (rate-limited)."""
    suppressed = _throttle.admit(f"{status}:{type(error).__name__}")
    if suppressed is None:
        return
    more = f" ({suppressed} more like it in the last second)" if suppressed else ""
    log.warning(
        "answered %d to %s %s: %s: %s%s",
        status,
        client_text(method, 20),
        client_text(path),
        type(error).__name__,
        error,
        more,
    )
