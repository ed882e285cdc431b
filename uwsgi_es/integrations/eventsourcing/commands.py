"""The deployment's answer to a conflict: re-run the command on fresh state, a bounded number of
times, then refuse with 409.

Two workers saving the same aggregate at the same version is normal under load: the library then
raises ``RecordConflictError`` (nothing of the second save is stored). Re-running the whole
command reloads the aggregate and decides again on what is now stored; re-sending the same events
would be wrong. ``UWSGI_ES_CONFLICT_RETRIES`` bounds the attempts, with exponential back-off and
full jitter between them; after the last one the caller gets ``ConcurrencyError``, which every
uwsgi_es web layer answers with 409.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from eventsourcing.persistence import RecordConflictError

from uwsgi_es.errors import ConcurrencyError
from uwsgi_es.lifecycle import registry
from uwsgi_es.runtime import retry
from uwsgi_es.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

# Conflicts met and retries made in this process (for /worker), as uwsgi_es's own applications count.
counts = {"conflicts": 0, "retries": 0}
_counting = threading.Lock()


def _count(name: str) -> None:
    with _counting:
        counts[name] += 1


def retry_on_conflict(command: Callable[P, T]) -> Callable[P, T]:
    """Decorate a command method of a library application (load, change, save)."""

    @functools.wraps(command)
    def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
        retries = (registry.settings_in_use() or Settings()).conflict_retries
        try:
            return retry.retry_on_conflict(
                functools.partial(command, *args, **kwargs),
                conflict=RecordConflictError,
                retries=retries,
                on_conflict=functools.partial(_count, "conflicts"),
                on_retry=functools.partial(_count, "retries"),
            )
        except RecordConflictError as exc:
            raise ConcurrencyError(
                f"{command.__qualname__} met a concurrent change {retries + 1} times in a row; "
                "nothing of it was stored."
            ) from exc

    return retrying
