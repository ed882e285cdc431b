"""Continuous write load against a real server, and the audit of what it left in the store.

Every deposit carries a unique amount, so the audit can tell, event by event, which request
stored it: an acknowledged deposit missing from the store is *lost*, an amount stored twice is
*duplicated*, and a deposit stored although its request failed is *in flight* (allowed only for
requests that failed, e.g. on a worker killed mid-request).

With ``retry_with_key`` the clients behave as a careful client should: each deposit carries an
``Idempotency-Key`` and is sent again with it after any failure (no answer, 409, 5xx) until it is
answered, so every deposit must end acknowledged and stored exactly once.
"""

from __future__ import annotations

import http.client
import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

from uwsgi_es.testing import UwsgiServer

from .checks import all_events


@dataclass
class Outcome:
    account: str
    amount: int
    status: int  # 0: no HTTP answer (connection refused or reset)
    error: str = ""
    finished: float = 0.0  # time.monotonic() when the answer (or the failure) came
    elapsed: float = 0.0
    attempts: int = 1
    replayed: bool = False  # answered from an earlier attempt that was stored (Idempotent-Replayed)


@dataclass
class Audit:
    sent: int
    acknowledged: int
    failed: int
    lost: int
    duplicated: int
    stored_after_failure: int
    stored_after_refusal: int  # stored although answered 4xx/503: must never happen
    statuses: Counter[int]
    versions_contiguous: bool
    retried: int = 0  # deposits sent more than once (with their key)
    replayed: int = 0  # ... of which an earlier attempt had been stored, its answer lost
    retrying: bool = False

    def check(self) -> None:
        """Nothing acknowledged lost, nothing stored twice, nothing refused stored, versions 1..n."""
        assert self.lost == 0, self.line()
        assert self.duplicated == 0, self.line()
        assert self.stored_after_refusal == 0, self.line()
        assert self.versions_contiguous, self.line()
        assert self.acknowledged > 0, self.line()
        if self.retrying:  # every deposit was sent until answered: all acknowledged, once each
            assert self.acknowledged == self.sent, self.line()

    def line(self) -> str:
        if self.retrying:
            share = 100 * self.acknowledged / self.sent if self.sent else 0
            return (
                f"deposits {self.sent}, acknowledged {self.acknowledged} ({share:.0f} %), lost {self.lost}, "
                f"duplicated {self.duplicated}; {self.retried} retried with their key, {self.replayed} "
                f"of them answered from a stored first attempt; final statuses "
                f"{dict(sorted(self.statuses.items()))}"
            )
        return (
            f"sent {self.sent}, acknowledged {self.acknowledged}, failed {self.failed}, lost {self.lost}, "
            f"duplicated {self.duplicated}, stored though failed {self.stored_after_failure}, "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


@dataclass
class DepositLoad:
    """``threads`` clients depositing unique amounts into ``accounts`` until ``stop()``.

    By default clients share the accounts, so commands also conflict and retry. With
    ``one_writer_per_account`` each client has an account of its own: no command can conflict, so a
    409 could only come from the server itself (e.g. a write retried after it was stored).
    """

    server: UwsgiServer
    accounts: int = 6
    threads: int = 8
    timeout: float = 15.0
    one_writer_per_account: bool = False
    retry_with_key: bool = False
    retry_for: float = 60.0  # seconds a retrying client keeps sending one deposit
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.one_writer_per_account:
            self.accounts = self.threads
        self.account_ids = [
            self.server.post("/accounts", {"owner": f"load {i}"}).json()["id"] for i in range(self.accounts)
        ]
        self._amounts = itertools.count(1)
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> DepositLoad:
        self._running.set()
        self._workers = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._running.clear()
        for worker in self._workers:
            worker.join(self.timeout + 5 + (self.retry_for if self.retry_with_key else 0))

    def _client(self, n: int) -> None:
        while self._running.is_set():
            with self._lock:
                amount = next(self._amounts)
            slot = n if self.one_writer_per_account else amount + n
            account = self.account_ids[slot % self.accounts]
            outcome = self._deposit(account, amount)
            with self._lock:
                self.outcomes.append(outcome)

    def _deposit(self, account: str, amount: int) -> Outcome:
        """One deposit: sent once, or with ``retry_with_key`` until it is answered."""
        headers = {"Idempotency-Key": str(uuid4())} if self.retry_with_key else None
        first_sent = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            started = time.monotonic()
            replayed = False
            try:
                result = self.server.post(
                    f"/accounts/{account}/deposits", {"amount": amount}, headers=headers, timeout=self.timeout
                )
                error = "" if result.status == 200 else result.body.decode(errors="replace")[:200]
                outcome = Outcome(account, amount, result.status, error)
                replayed = result.headers.get("idempotent-replayed") == "true"
            except (OSError, http.client.HTTPException) as exc:  # no whole answer: not acknowledged
                outcome = Outcome(account, amount, 0, f"{type(exc).__name__}: {exc}")
            outcome.finished = time.monotonic()
            outcome.elapsed = outcome.finished - started
            outcome.attempts, outcome.replayed = attempts, replayed
            if outcome.status == 200:
                return outcome
            time.sleep(0.01)  # the server or the database is away: don't spin
            retry = outcome.status in (0, 409) or outcome.status >= 500
            if not (self.retry_with_key and retry) or time.monotonic() - first_sent > self.retry_for:
                return outcome

    def audit(self) -> Audit:
        """Read every account back (after the load stopped) and compare with what was answered."""
        stored: Counter[int] = Counter()
        contiguous = True
        for account in self.account_ids:
            events = all_events(self.server, account)
            contiguous &= [e["version"] for e in events] == list(range(1, len(events) + 1))
            stored.update(e["state"]["amount"] for e in events[1:])
        acknowledged = {o.amount for o in self.outcomes if o.status == 200}
        failed = {o.amount for o in self.outcomes if o.status != 200}
        refused = {o.amount for o in self.outcomes if 400 <= o.status < 500 or o.status == 503}
        return Audit(
            sent=len(self.outcomes),
            acknowledged=len(acknowledged),
            failed=len(failed),
            lost=len(acknowledged - set(stored)),
            duplicated=sum(1 for count in stored.values() if count > 1),
            stored_after_failure=len(failed & set(stored)),
            stored_after_refusal=len(refused & set(stored)),
            statuses=Counter(o.status for o in self.outcomes),
            versions_contiguous=contiguous,
            retried=sum(1 for o in self.outcomes if o.attempts > 1),
            replayed=sum(1 for o in self.outcomes if o.replayed),
            retrying=self.retry_with_key,
        )


def reload_under_load(
    server: UwsgiServer, trigger: Path, *, retry_with_key: bool = False
) -> tuple[DepositLoad, set[int], set[int]]:
    """Touch ``trigger`` under write load; return the load and the worker pids before and after."""
    before = set(server.worker_pids())
    # One writer per account: see the killed-workers test.
    load = DepositLoad(server, one_writer_per_account=True, retry_with_key=retry_with_key).start()
    time.sleep(1)
    os.utime(trigger)  # uWSGI compares whole-second mtimes: the file was made 10 s older
    deadline = time.monotonic() + 60
    after: set[int] = set()
    while time.monotonic() < deadline:
        try:
            after = set(server.worker_pids())
        except OSError:  # the stats server is re-bound during a full reload
            after = set()
        if len(after) == len(before) and not after & before:
            break
        time.sleep(0.1)
    else:
        load.stop()
        raise AssertionError(f"not every worker was replaced: before {before}, now {after}")
    server.wait_until_ready(idle=False)
    time.sleep(1)
    load.stop()
    return load, before, after


def aged_trigger(tmp_path: Path) -> Path:
    trigger = tmp_path / "reload-trigger"
    trigger.touch()
    past = time.time() - 10
    os.utime(trigger, (past, past))
    return trigger
