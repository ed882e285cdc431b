"""The read side under write load: does a projection runner gain on writers depositing flat out?

Per round, on a fresh database: the example API under uWSGI (the bench's options, no mule) takes
deposits from wrk for LOAD_SECONDS; HEAD_START seconds in, `uwsgi-es project balances` (the runner
a mule runs, in a process of its own) starts on the backlog those seconds left. Every
SAMPLE_SECONDS the events stored and the events the runner has applied are counted. From its first
applied event until it has applied every event stored one sample earlier (caught up), the row
compares the events it applied per second with the events written per second **in the same
window**: at 1.0 a runner only keeps pace, above it gains on the writers (and how fast a backlog
left by a pause or a deploy shrinks); below it falls behind for good. A runner that never catches
up before the load ends is measured over the window it had.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, func, select

from bench.contenders import PROJECT, Contender, open_accounts, start
from bench.measure import ROUNDS, Row
from bench.targets import ratio_target
from bench.wrk import CONNECTIONS, deposit_script
from uwsgi_es.stores.sqlalchemy.schema import records_table, tracking_table

SCENARIO = "projection: under write load"
ANCHOR = "the writers"
LOAD_SECONDS = int(os.environ.get("BENCH_SUSTAINED_SECONDS", "16"))
HEAD_START = 5.0
SAMPLE_SECONDS = 0.025


@dataclass
class Chase:
    applied_per_s: float
    written_per_s: float
    backlog: int  # events stored before the runner's first step
    written_before_per_s: float  # the writers' rate before the runner started (alone on the database)
    seconds: float  # from its first applied event to caught up (or to the end of the load)
    caught_up: bool


def chase(url: str, logs: Path) -> Chase:
    """One round on the migrated, empty database ``url``."""
    env = {"UWSGI_ES_DATABASE_URL": url}
    server = start("uwsgi_es.wsgi:application", env, logs, wait_for="ready")
    engine = create_engine(url)
    runner: subprocess.Popen[bytes] | None = None
    try:
        contender = Contender("uwsgi_es", server)
        open_accounts(contender, "write", 100, 1)
        script = logs / "deposits.lua"
        script.write_text(deposit_script(contender))
        before = _sample(engine)
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{LOAD_SECONDS}s", "-s", str(script), server.url],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(HEAD_START)
        launched = _sample(engine)
        project = Path(sys.executable).parent / "uwsgi-es"
        with open(logs / "project.log", "ab") as out:
            runner = subprocess.Popen(
                [str(project), "project", "balances"],
                cwd=PROJECT,
                env={**os.environ, **env, "UWSGI_ES_APPLICATION": "uwsgi_es.example.domain:BankAccounts"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        samples: list[tuple[float, int, int]] = []  # (time, stored, applied)
        while load.poll() is None:
            samples.append(_sample(engine))
            time.sleep(SAMPLE_SECONDS)
        assert load.wait() == 0
        return _chase(samples, (launched[1] - before[1]) / (launched[0] - before[0]))
    finally:
        if runner is not None:
            runner.terminate()
            runner.wait(10)
        engine.dispose()
        server.stop()


def _sample(engine: object) -> tuple[float, int, int]:
    position = select(tracking_table.c.position).where(tracking_table.c.projection == "balances")
    with engine.connect() as connection:  # type: ignore[attr-defined]
        stored = connection.execute(select(func.count()).select_from(records_table)).scalar_one()
        applied = connection.execute(
            select(func.count()).where(records_table.c.id <= func.coalesce(position.scalar_subquery(), 0))
        ).scalar_one()
    return time.monotonic(), int(stored), int(applied)


def _chase(samples: list[tuple[float, int, int]], written_before_per_s: float) -> Chase:
    first = next(i for i, (_, _, applied) in enumerate(samples) if applied > 0)
    last = next(
        (i for i in range(first + 1, len(samples)) if samples[i][2] >= samples[i - 1][1]), len(samples) - 1
    )
    (t0, stored0, applied0), (t1, stored1, applied1) = samples[first], samples[last]
    seconds = t1 - t0
    return Chase(
        applied_per_s=(applied1 - applied0) / seconds,
        written_per_s=(stored1 - stored0) / seconds,
        backlog=samples[first - 1][1] if first else stored0,
        written_before_per_s=written_before_per_s,
        seconds=seconds,
        caught_up=last < len(samples) - 1 or samples[last][2] >= samples[last - 1][1],
    )


def sustained_row(fresh_database: Callable[[str], str], store: str, logs: Path) -> Row:
    """ROUNDS rounds, each on a new database ``fresh_database(name)`` makes (migrated)."""
    chases = [chase(fresh_database(f"sustained{n}"), logs / f"sustained-{store}-{n}") for n in range(ROUNDS)]
    row = Row(
        SCENARIO,
        store,
        "uwsgi_es runner (applied/s)",
        f"{ANCHOR} (written/s)",
        [c.applied_per_s for c in chases],
        [c.written_per_s for c in chases],
        [c.applied_per_s / c.written_per_s for c in chases],
        ratio_target(SCENARIO, ANCHOR),
        "; ".join(
            f"backlog {c.backlog} events, {'caught up' if c.caught_up else 'not caught up'} in {c.seconds:.2f}s "
            f"(writes {c.written_before_per_s:.0f}/s before the runner started)"
            for c in chases
        ),
    )
    print(
        f"{SCENARIO:<28} {store:<11} {statistics.median(row.ours_rps):8.0f} applied / "
        f"{statistics.median(row.anchor_rps):8.0f} written events/s, ratio {row.ratio:.2f} "
        f"(target >= {row.target}); {row.evidence}",
        flush=True,
    )
    return row
