"""Measurements: a side-by-side comparison (rounds of wrk runs), boot and memory figures, what
imports cost, and where a request's time goes (cProfile).

Settings: BENCH_ROUNDS, BENCH_SECONDS and BENCH_WARMUP override the defaults.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contenders import PROJECT, Contender, open_accounts, start
from bench.targets import ratio_target
from bench.wrk import CORES, Run, deposit_script, pin_server, script, wrk, wrk_pinned, wrk_run
from uwsgi_es.testing import UwsgiServer, lifecycle_events

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))


@dataclass
class Row:
    scenario: str
    store: str
    ours: str
    anchor: str
    ours_rps: list[float]
    anchor_rps: list[float]
    ratios: list[float]
    target: float
    evidence: str = ""  # how busy each side was: what the bottleneck was
    bottlenecks: tuple[str, str] = ("", "")  # ours', the anchor's (the side at its limit)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool:
        return self.ratio >= self.target


def compare(
    scenario: str,
    store: str,
    ours: Contender,
    anchor: Contender,
    make_script: Callable[[Contender], str],
    *,
    target: float | None = None,
) -> Row:
    """Warm both, then ROUNDS rounds of (ours, anchor) runs; ratios within each round. ``target``:
    the row's own (default: bench/targets.py's for the scenario and anchor)."""
    for contender in (ours, anchor):
        wrk(contender.server, make_script(contender), WARMUP)
    runs: list[tuple[Run, Run]] = []
    for _ in range(ROUNDS):
        runs.append(
            (wrk(ours.server, make_script(ours), SECONDS), wrk(anchor.server, make_script(anchor), SECONDS))
        )
    if target is None:
        target = ratio_target(scenario, anchor.name.split(", ")[0], store)
    row = _row(scenario, store, ours.name, anchor.name, runs, target)
    print(
        f"{scenario:<28} {store:<11} {ours.name} vs {anchor.name}: {statistics.median(row.ours_rps):8.0f} / "
        f"{statistics.median(row.anchor_rps):8.0f} req/s, ratio {row.ratio:.2f} (target >= {target}); "
        f"{row.evidence}",
        flush=True,
    )
    return row


def compare_pinned(scenario: str, ours: Contender, anchor: Contender, paths: tuple[str, str]) -> Row:
    """``compare`` for one fixed path per side, without a Lua script, each server alone on one core
    and wrk on the other, recording how busy both cores were: a valid ceiling has the servers'
    core near 1.0 and wrk's below it (the application, not the load generator, is the limit)."""
    for contender in (ours, anchor):
        pin_server(contender.server)
    for contender, path in zip((ours, anchor), paths, strict=True):
        wrk_pinned(contender.server, path, WARMUP)
    runs: list[tuple[Run, Run]] = []
    for _ in range(ROUNDS):
        runs.append(
            (wrk_pinned(ours.server, paths[0], SECONDS), wrk_pinned(anchor.server, paths[1], SECONDS))
        )
    row = _row(scenario, "-", ours.name, anchor.name, runs, ratio_target(scenario, anchor.name), pinned=True)
    print(f"{scenario:<28} ratio {row.ratio:.2f} (target >= {row.target}); {row.evidence}", flush=True)
    return row


def _row(
    scenario: str,
    store: str,
    ours: str,
    anchor: str,
    runs: list[tuple[Run, Run]],
    target: float,
    *,
    pinned: bool = False,
) -> Row:
    """A row from its rounds, with the median busy figures of each side as its evidence. Pinned
    (the server alone on one core): the server is the bottleneck when its core is near full."""
    sides = []
    for i, name in enumerate((ours, anchor)):
        server = statistics.median(r[i].server_busy for r in runs)
        load = statistics.median(r[i].wrk_busy for r in runs)
        machine = statistics.median(r[i].machine_busy for r in runs)
        if pinned:
            bottleneck = "load generator" if load >= server else "server CPU"
            figures = f"server core busy {server:.2f}, wrk core busy {load:.2f}"
        else:
            bottleneck = _most_common([r[i].bottleneck for r in runs])
            figures = f"server {server:.2f}, wrk {load:.2f}, machine {machine:.2f} of {CORES} cores"
        sides.append((name, figures, bottleneck))
    return Row(
        scenario,
        store,
        ours,
        anchor,
        [a.rate for a, _ in runs],
        [b.rate for _, b in runs],
        [a.rate / b.rate for a, b in runs],
        target,
        "; ".join(f"{name}: {figures} ({bottleneck})" for name, figures, bottleneck in sides),
        (sides[0][2], sides[1][2]),
    )


def _most_common(values: list[str]) -> str:
    return max(set(values), key=values.count)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def private_mb(pid: int) -> float:
    """Memory only this worker holds (USS): RSS less the pages still shared with the master."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    kinds = re.findall(r"Private_(?:Clean|Dirty):\s+(\d+) kB", rollup)
    return sum(int(k) for k in kinds) / 1024


def boot_figures(env: dict[str, str], log_dir: Path, label: str, runs: int = 3) -> dict[str, float]:
    """Median per-worker build time (fork → ready, from the hook's log) and ini start → 4 ready."""
    builds, starts = [], []
    for n in range(runs):
        server = UwsgiServer(
            PROJECT / "uwsgi.ini",
            env=env,
            options=["--processes", "4"],
            log_dir=log_dir / f"boot-{label}-{n}",
        )
        server.start()
        starts.append(server.startup_seconds)
        server.stop()
        builds += [float(event["ms"]) for event in lifecycle_events(server.log(), "build")]
    return {"build_ms": statistics.median(builds), "start_s": statistics.median(starts)}


def memory_figures(env: dict[str, str], logs: Path) -> dict[str, float]:
    ours = Contender("uwsgi_es", start("uwsgi_es.wsgi:application", env, logs / "mem-ours", wait_for="ready"))
    hello = Contender("hello", start("bench.apps.hello:application", {}, logs / "mem-hello"))
    try:
        open_accounts(ours, "write", 50, 1)
        reads = script("GET", [f"/accounts/{a}" for a in ours.accounts["write"]])
        done = 0
        while done < 10_000:  # deposits and reads, then the same number of requests to hello
            done += wrk_run(ours.server, deposit_script(ours), 2)[1]
            done += wrk_run(ours.server, reads, 2)[1]
        served = 0
        while served < done:
            served += wrk_run(hello.server, script("GET", ["/"]), 2)[1]
        return {
            "ours_mb": statistics.median(rss_mb(p) for p in ours.server.worker_pids()),
            "hello_mb": statistics.median(rss_mb(p) for p in hello.server.worker_pids()),
            "ours_private_mb": statistics.median(private_mb(p) for p in ours.server.worker_pids()),
            "hello_private_mb": statistics.median(private_mb(p) for p in hello.server.worker_pids()),
            "requests": done,
        }
    finally:
        ours.server.stop()
        hello.server.stop()


IMPORT_GROUPS = [
    ("msgspec (events and responses)", "import msgspec, msgspec.json"),
    ("SQLAlchemy Core", "import sqlalchemy"),
    ("the SQLite driver and dialect", "import sqlalchemy.dialects.sqlite.pysqlite, sqlite3"),
    ("uwsgi_es and the example API", "import uwsgi_es.wsgi, uwsgi_es.stores.sqlalchemy"),
]


IMPORT_PROBE = """
import resource, sys
def rss_kb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024
before = rss_kb()
for statement in sys.argv[1:]:
    exec(statement)
    after = rss_kb()
    print(after - before)
    before = after
"""


def import_costs() -> list[tuple[str, float]]:
    """RSS each group of modules adds to a fresh interpreter, imported in order: what the master
    loads once and every worker's RSS counts again."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *(statement for _, statement in IMPORT_GROUPS)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [(name, int(kb) / 1024) for (name, _), kb in zip(IMPORT_GROUPS, out.stdout.split(), strict=True)]


PROFILED = [
    ("whole request (JsonApi.__call__)", "web/api.py", "__call__"),
    ("routing (uwsgi_es.web.http.Router.match)", "web/http.py", "match"),
    ("request body: read and parse JSON", "web/bodies.py", "read_json_object"),
    ("read: store select (connection, SQL, rows)", "stores/sqlalchemy/store.py", "select"),
    ("read: decode events (JSON, datetime, dataclass)", "application.py", "from_record"),
    ("read: replay events onto the aggregate", "domain.py", "replay"),
    ("write: save (publish, encode, append)", "application.py", "save"),
    ("write: store append (connection, INSERT)", "stores/sqlalchemy/store.py", "append"),
    ("end of request: release the session, if a view made one", "stores/sqlalchemy/store.py", "end_request"),
]


def where_time_goes(url: str, requests: int = 400) -> list[tuple[str, float, float]]:
    """cProfile one process serving deposits, then reads of 10-event accounts, in-process (no
    uWSGI, no network): microseconds per request spent in each part of the hot path."""
    import cProfile
    import pstats

    from werkzeug.test import Client

    from uwsgi_es.lifecycle import registry
    from uwsgi_es.wsgi import application

    os.environ["UWSGI_ES_DATABASE_URL"] = url
    client = Client(application)
    accounts = [client.post("/accounts", json={"owner": "p"}).json["id"] for _ in range(20)]  # type: ignore[index]
    for account in accounts:
        for _ in range(9):
            client.post(f"/accounts/{account}/deposits", json={"amount": 1})
    figures: dict[str, list[float]] = {}
    for _label, call in (
        ("deposit", lambda i: client.post(f"/accounts/{accounts[i % 20]}/deposits", json={"amount": 1})),
        ("read", lambda i: client.get(f"/accounts/{accounts[i % 20]}")),
    ):
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(requests):
            call(i)
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        for name, file_part, function in PROFILED:
            total = sum(v[3] for k, v in stats.items() if k[0].endswith(file_part) and k[2] == function)
            figures.setdefault(name, []).append(total / requests * 1e6)
    registry.close_application()
    return [(name, values[0], values[1]) for name, values in figures.items()]


def health_profile(requests: int = 20_000) -> dict[str, Any]:
    """Microseconds per GET /health in one process, no uWSGI: ours whole, each part of it
    (cProfile, inclusive), and the bare hello called the same way (timed without the profiler,
    as ours is for the whole)."""
    import cProfile
    import pstats
    import timeit

    from bench.apps import hello
    from uwsgi_es.wsgi import application

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/health",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": None,
        "wsgi.url_scheme": "http",
    }

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    def ours() -> None:
        for _ in application(dict(environ), start_response):
            pass

    def bare() -> None:
        for _ in hello.application(dict(environ), start_response):
            pass

    ours()
    whole = min(timeit.repeat(ours, number=requests, repeat=3)) / requests * 1e6
    anchor = min(timeit.repeat(bare, number=requests, repeat=3)) / requests * 1e6
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        ours()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    own = sum(v[2] for v in stats.values())  # every function's own time: the profiled whole
    served = {key: value for key, value in stats.items() if "/bench/" not in key[0]}  # not the loop
    top = sorted(served.items(), key=lambda item: item[1][2], reverse=True)[:HEALTH_TOP]
    parts = [(_function_name(key), value[2] / own * whole) for key, value in top]
    return {"ours_us": whole, "hello_us": anchor, "parts": parts}


HEALTH_TOP = 12  # functions shown, by their own time


def _function_name(key: tuple[str, int, str]) -> str:
    """``uwsgi_es/web/api.py:__call__`` (a path below site-packages or the project), or a builtin."""
    file, _, function = key
    if file == "~":
        return function.strip("<>")
    for marker in ("site-packages/", f"{PROJECT}/", "/lib/python"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{file}:{function}"
