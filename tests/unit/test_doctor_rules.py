"""The doctor's rules on hand-made observations (uWSGI 2.0.31's own log lines): what each flags,
what it leaves to another, and what an instance that never started Python still gets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from uwsgi_es.doctor import library, logs, mules, options
from uwsgi_es.doctor.examination import Examination, workers_of
from uwsgi_es.doctor.findings import diagnose
from uwsgi_es.doctor.observed import Finding, Observed, mule_kind
from uwsgi_es.doctor.probe import _findable, _look_at_mule

MULE_SEGFAULTS = [
    "spawned uWSGI worker 1 (pid: 11, cores: 1)",
    "spawned uWSGI mule 1 (pid: 20)",
    "!!! uWSGI process 20 got Segmentation Fault !!!",
    "OOOPS mule 1 (pid: 20) crippled...trying respawn...",
    "spawned uWSGI mule 1 (pid: 21)",
    "!!! uWSGI process 21 got Segmentation Fault !!!",
    "OOOPS mule 1 (pid: 21) crippled...trying respawn...",
]


def observed(
    log: list[str] | None = None, python: tuple[int, ...] = (3, 11, 7), **opts: list[Any]
) -> Observed:
    """An instance whose master wrote its record: ``opts`` as uWSGI options (``py_call_x`` is
    ``py-call-x``), mules described as the probe describes them."""
    named = {name.replace("_", "-"): values for name, values in opts.items()}
    seen = Observed(named, {}, [], [], python=python, log=log or [])
    seen.mules = [{"mule": m, "kind": mule_kind(m), "missing": ""} for m in named.get("mule", [])]
    return seen


def titles(found: list[Finding]) -> list[str]:
    return [f.title for f in found if f.problem]


@pytest.mark.parametrize(
    ("python", "title"),
    [
        ((3, 13, 0), "py-call-osafterfork aborts every worker and mule on Python 3.13.0"),
        ((3, 12, 1), "py-call-osafterfork aborts every worker and mule from Python 3.13"),
    ],
)
def test_py_call_osafterfork_is_a_problem_on_every_python(python: tuple[int, ...], title: str) -> None:
    """Fatal on 3.13, harmless before, unneeded everywhere: the same ini outlives its Python."""
    found = list(options.osafterfork(observed(python=python, py_call_osafterfork=["true"])))
    assert titles(found) == [title]
    assert found[0].fix.startswith("remove `py-call-osafterfork`: uwsgi_es needs no fork option")
    assert list(options.osafterfork(observed(python=python, py_call_osafterfork=["false"]))) == []


@pytest.mark.parametrize("mule", ["/venv/bin/uwsgi-es-mule.py", "uwsgi_es.readside.mule:run", ""])
def test_fork_hooks_beside_any_mule(mule: str) -> None:
    """A script, a function or a bare mule: uWSGI forks each without the hooks, each segfaults."""
    seen = observed(MULE_SEGFAULTS, py_call_uwsgi_fork_hooks=["true"], mule=[mule])
    found = list(mules.fork_hooks_with_mules(seen))
    assert titles(found) == ["py-call-uwsgi-fork-hooks with a mule: the mule crashes at every respawn"]
    assert f"`mule = {mule}`; in this boot it died: mule 1 2 time(s)" in found[0].detail
    assert "'!!! uWSGI process 20 got Segmentation Fault !!!'" in found[0].detail
    assert "`uwsgi-es project NAME`" in found[0].fix
    assert list(mules.mules_that_cannot_start(seen)) == []  # the hooks say why it dies
    assert list(logs.crashes(seen)) == []  # its crash lines are quoted once, there
    assert list(mules.fork_hooks_with_mules(observed(py_call_uwsgi_fork_hooks=["true"]))) == []
    (counted,) = mules.fork_hooks_with_mules(observed(py_call_uwsgi_fork_hooks=["true"], mules=["2"]))
    assert "respawned, about once a second: `mules = 2`" in counted.detail


def test_a_mule_that_dies_for_no_known_reason() -> None:
    seen = observed([*MULE_SEGFAULTS, "RuntimeError: no queue"], mule=["/app/mule.py"])
    found = list(mules.mules_that_cannot_start(seen))
    assert titles(found) == ["a mule died during the boot: `mule = /app/mule.py` (mule 1)"]
    assert "the log's first Python exception: 'RuntimeError: no queue'" in found[0].detail


def test_a_missing_projection_script_says_what_installs_it() -> None:
    seen = observed(mule=["/venv/bin/uwsgi-es-mule.py"])
    seen.mules[0]["missing"] = "no file /venv/bin/uwsgi-es-mule.py"
    (found,) = mules.mules_that_cannot_start(seen)
    assert found.title == "a mule that cannot start: `mule = /venv/bin/uwsgi-es-mule.py` (mule 1)"
    assert found.fix.startswith("install uwsgi_es into the virtualenv of this uwsgi")


def test_the_probe_finds_a_module_without_importing_its_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking for ``pkg.sub.mod`` must not run ``pkg/__init__.py`` in the master it watches."""
    package = tmp_path / "doctor_probe_pkg" / "sub"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert _findable("doctor_probe_pkg.sub.mod")
    assert not _findable("doctor_probe_pkg.sub.nothing")
    assert not _findable("doctor_probe_pkg.sub.mod.deeper")
    assert "doctor_probe_pkg" not in sys.modules
    assert _look_at_mule("doctor_probe_pkg.sub.mod:run")["missing"] == ""
    assert _look_at_mule("nothing_here.py") == {
        "mule": "nothing_here.py",
        "kind": "script",
        "missing": f"no file {tmp_path / 'nothing_here.py'}",
    }
    assert _look_at_mule("")["kind"] == "plain"


def test_variables_left_unset_are_named_with_their_options() -> None:
    seen = observed(http_socket=["$(APP_HTTP)"], env=["A=$(APP_A)", "B=$(APP_HTTP)"], chdir=["/srv"])
    assert titles(list(options.unset_variables(seen))) == [
        "the environment variable APP_A is not set",
        "the environment variable APP_HTTP is not set",
    ]
    (http,) = [f for f in options.unset_variables(seen) if "APP_HTTP" in f.title]
    assert (
        http.detail == "uWSGI kept the text $(APP_HTTP) in `http-socket = $(APP_HTTP)`, `env = B=$(APP_HTTP)`"
    )
    assert http.fix == "export APP_HTTP=... or remove it from the ini"


def test_the_options_uwsgi_printed_and_the_log_without_them() -> None:
    log = [
        "[uWSGI] getting INI configuration from uwsgi.ini",
        ";uWSGI instance configuration",
        "[uwsgi]",
        "mule = /a.py",
        "mule = ",
        "env = URL=postgresql://u:secret@db/x",
        ";end of configuration",
        "*** Starting uWSGI 2.0.31 (64bit) ***",
    ]
    printed, rest = logs.configuration(log)
    assert printed == {"mule": ["/a.py", ""], "env": ["URL=postgresql://u:secret@db/x"]}
    assert rest == [log[0], log[-1]]
    assert logs.configuration(rest) == ({}, rest)


def test_a_crash_no_other_finding_explains_is_quoted() -> None:
    log = [
        "DAMN ! worker 1 (pid: 11) died, killed by signal 6 :( trying respawn ...",
        "Fatal Python error: _PyRecursiveMutex_Unlock: unlocking a recursive mutex that is not owned",
        *MULE_SEGFAULTS,
    ]
    (found,) = logs.crashes(observed(log, mule=["/app/mule.py"]))
    assert found.detail.startswith("the log says 'Fatal Python error: _PyRecursiveMutex_Unlock: ")
    assert "(1 such line(s))" in found.detail
    assert logs.worker_deaths(log) == 1
    assert logs.mule_respawns(log) == {1: 2}


def test_an_instance_that_stopped_before_python_is_judged_on_its_log() -> None:
    """The address taken: uWSGI exits before its master writes anything."""
    log = [
        "probably another instance of uWSGI is running on the same address (127.0.0.1:8080).",
        "bind(): Address already in use [core/socket.c line 769]",
    ]
    found = diagnose(Observed({}, {}, [], [], log=log))
    assert titles(found) == ["the address 127.0.0.1:8080 is in use"]
    assert found[0].fix.startswith("stop what listens there, or set UWSGI_ES_HTTP=127.0.0.1:<a free port>")
    report = Examination(Path("uwsgi.ini"), False, 0.1, 1, "\n".join(log), found).report()
    assert "uWSGI stopped by itself (exit code 1)" in report
    assert report.endswith("1 problem(s)")
    silent = Examination(Path("uwsgi.ini"), False, 60.0, None, "", diagnose(Observed({}, {}, [], [])))
    assert silent.report().endswith("1 problem(s)")  # not booting is one, when nothing says why
    assert silent.status == 2


def test_threads_seen_only_as_started_when_no_worker_looked() -> None:
    seen = observed(processes=["2"], master=["true"], die_on_term=["true"], need_app=["true"])
    seen.events = [{"record": "thread", "thread": "pool", "runs": "run", "where": "app.py:3"}]
    titles_found = titles(diagnose(seen))
    assert titles_found == [
        "only 0 of 2 workers started accepting requests",
        "1 thread(s) started in the master",
    ]


def test_a_library_runner_started_in_the_master_says_to_give_it_a_mule() -> None:
    """The library's ProjectionRunner starts two threads as it is constructed: at import, in the
    master. The finding names them and the fix (UWSGI_ES_PROJECTIONS and a mule)."""
    seen = observed()
    seen.events = [
        {
            "record": "thread",
            "thread": "Thread-1",
            "runs": "BaseProjectionRunner._process_events_loop",
            "where": "/venv/lib/python3.11/site-packages/eventsourcing/projection.py:341",
        },
        {
            "record": "thread",
            "thread": "Thread-2",
            "runs": "Pool.run",
            "where": "/venv/psycopg_pool/pool.py:10",
        },
    ]
    found = list(library.runners_in_the_master(seen))
    assert titles(found) == ["an eventsourcing library runner started in the master (1 thread(s))"]
    assert "_process_events_loop" in found[0].detail
    assert "UWSGI_ES_PROJECTIONS" in found[0].fix
    seen.events = seen.events[1:]
    assert list(library.runners_in_the_master(seen)) == []


@pytest.mark.parametrize(
    ("environment", "processes", "flagged"),
    [
        ({"AGGREGATE_CACHE_MAXSIZE": "100", "AGGREGATE_CACHE_FASTFORWARD": "n"}, "4", True),
        (
            {
                "BANKACCOUNTS_AGGREGATE_CACHE_MAXSIZE": "10",
                "BANKACCOUNTS_AGGREGATE_CACHE_FASTFORWARD": "false",
            },
            "2",
            True,
        ),
        ({"AGGREGATE_CACHE_MAXSIZE": "100", "AGGREGATE_CACHE_FASTFORWARD": "n"}, "1", False),
        ({"AGGREGATE_CACHE_MAXSIZE": "100", "AGGREGATE_CACHE_FASTFORWARD": "y"}, "4", False),
        ({"AGGREGATE_CACHE_FASTFORWARD": "n"}, "4", False),
    ],
)
def test_an_aggregate_cache_that_does_not_fast_forward_in_several_workers(
    environment: dict[str, str], processes: str, flagged: bool
) -> None:
    seen = observed(processes=[processes])
    seen.environment = environment
    found = list(library.stale_aggregate_cache(seen))
    assert bool(found) is flagged
    if flagged:
        assert found[0].title.endswith(f"with {processes} workers")
        assert "fast-forwards cached aggregates by default" in found[0].fix


def test_a_mule_that_crashed_before_its_spawn_was_logged_is_still_the_mules() -> None:
    """The doctor stops the instance while a dying mule is respawned: the new mule's segfault may
    reach the log without the master's "spawned uWSGI mule" line. With mules dying, a crash of a
    process the log never said it spawned is theirs, not another crash; a worker's stays reported."""
    late = [*MULE_SEGFAULTS, "!!! uWSGI process 22 got Segmentation Fault !!!"]
    assert list(logs.crashes(observed(late, mule=["uwsgi_es.readside.mule:run"]))) == []
    worker = [*late, "!!! uWSGI process 11 got Segmentation Fault !!!"]
    (found,) = logs.crashes(observed(worker, mule=["uwsgi_es.readside.mule:run"]))
    assert "uWSGI process 11 got Segmentation Fault" in found.detail


@pytest.mark.parametrize(
    ("command", "workers"),
    [
        (["granian", "--interface", "asgi", "--workers", "4", "app:application"], 4),
        (["uvicorn", "app:application", "--workers=3"], 3),
        (["gunicorn", "-w", "2", "-k", "asgi", "app:application"], 2),
        (["gunicorn", "app:application"], 1),
    ],
)
def test_the_workers_a_server_command_asks_for(command: list[str], workers: int) -> None:
    assert workers_of(command) == workers


def server_seen(*events: dict[str, Any], built: int = 0) -> Observed:
    seen = Observed({"workers": ["2"]}, {}, list(events), [], server="gunicorn")
    seen.workers = [{"worker": pid, "pid": pid, "inherited": []} for pid in range(100, 100 + built)]
    return seen


def test_under_another_server_the_parent_is_named_and_the_fix_is_the_lifespan() -> None:
    build = {
        "record": "uwsgi_es.build",
        "where": "myapp/asgi.py:3",
        "importing": True,
        "application": "Carts",
    }
    found = [f for f in diagnose(server_seen(build, built=2)) if f.problem]
    assert titles(found) == ["an application (Carts) was built in the parent at import"]
    assert found[0].fix.startswith("build it in each worker: serve uwsgi_es.servers.asgi.asgi(...)")


def test_workers_that_build_on_first_request_are_a_note_and_missing_builds_a_problem() -> None:
    lazy = {"record": "declared", "pid": 1, "parent": True, "lifespan": False}
    assert [f.problem for f in diagnose(server_seen(lazy)) if "built" in f.title] == [False]
    waiting = {"record": "declared", "pid": 101, "parent": False, "lifespan": True}
    found = [f for f in diagnose(server_seen(waiting, built=1)) if f.problem]
    assert titles(found) == ["only 1 of 2 workers built their application"]
