"""The one conflict retry: bounded, counted, backing off, and the last conflict propagates."""

from __future__ import annotations

import pytest

from uwsgi_es.errors import ConcurrencyError
from uwsgi_es.runtime import retry


def test_a_conflict_is_retried_until_it_passes() -> None:
    calls: list[str] = []
    conflicts: list[int] = []
    retries: list[int] = []

    def run() -> str:
        calls.append("run")
        if len(calls) < 3:
            raise ConcurrencyError("version 2 exists")
        return "done"

    result = retry.retry_on_conflict(
        run,
        conflict=ConcurrencyError,
        retries=5,
        on_conflict=lambda: conflicts.append(1),
        on_retry=lambda: retries.append(1),
    )
    assert (result, len(calls), len(conflicts), len(retries)) == ("done", 3, 2, 2)


def test_the_last_conflict_propagates_after_the_bound() -> None:
    calls = 0

    def run() -> None:
        nonlocal calls
        calls += 1
        raise ConcurrencyError(f"conflict {calls}")

    with pytest.raises(ConcurrencyError, match="conflict 4"):
        retry.retry_on_conflict(run, conflict=ConcurrencyError, retries=3)
    assert calls == 4


def test_other_errors_are_not_retried() -> None:
    calls = 0

    def run() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not a conflict")

    with pytest.raises(ValueError, match="not a conflict"):
        retry.retry_on_conflict(run, conflict=ConcurrencyError, retries=3)
    assert calls == 1


def test_the_back_off_is_capped_even_after_many_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(retry.process, "pause", waits.append)
    for attempt in (1, 10, 200, 10_000):  # 2**10_000 ms would overflow a float
        retry.back_off(attempt, cap=0.01)
    assert len(waits) == 4
    assert all(0 <= wait <= 0.01 for wait in waits)
    assert waits[0] <= 0.002
