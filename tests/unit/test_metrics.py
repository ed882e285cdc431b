"""The shared table of numbers (one slot per process, summed) with real forked processes on a
shared mmap, and /metrics in process: parsed by prometheus_client, for operators only."""

from __future__ import annotations

import mmap
import os
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from uwsgi_es.metrics import recorder
from uwsgi_es.metrics.table import ENTRY_BYTES, KEY_BYTES, SLOT_BYTES, SlotTable
from uwsgi_es.wsgi import application

from .conftest import from_address


def shared_area(slots: int) -> memoryview:
    return memoryview(mmap.mmap(-1, slots * SLOT_BYTES))  # anonymous and shared: survives fork


def in_child(work: Any) -> None:
    """Run ``work`` in a forked process that exits hard (like a SIGKILLed worker: no clean-up)."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_each_process_counts_in_its_slot_and_the_sum_is_everyone_s() -> None:
    area = shared_area(4)
    for slot in (1, 2, 3):

        def count(slot: int = slot) -> None:
            table = SlotTable(area, slot, 4)
            for _ in range(slot * 10):
                table.add("requests\x1fGET")
            table.add("events", 0.5)

        in_child(count)
    totals = SlotTable(area, 0, 4).totals()
    assert totals == {"requests\x1fGET": 60.0, "events": 1.5}


def test_a_respawned_process_goes_on_from_its_predecessor_s_numbers() -> None:
    area = shared_area(3)
    in_child(lambda: [SlotTable(area, 2, 3).add(key) for key in ("a", "b", "a")])
    respawned = SlotTable(area, 2, 3)
    assert respawned.index.keys() == {"a", "b"}
    respawned.add("a")
    respawned.add("c", 2)
    assert SlotTable(area, 0, 3).totals() == {"a": 3.0, "b": 1.0, "c": 2.0}
    assert len(respawned.index) == 3  # no key entered twice


def test_a_full_slot_drops_new_keys_and_says_how_much() -> None:
    area = shared_area(1)
    table = SlotTable(area, 0, 1, slot_bytes=4 * ENTRY_BYTES)  # room for 3 keys
    for key in ("a", "b", "c", "d", "e"):
        table.add(key, 2)
    table.add("a")
    assert table.totals() == {"a": 3.0, "b": 2.0, "c": 2.0}
    assert table.dropped() == 4.0


def test_keys_longer_than_an_entry_are_cut_not_spilled() -> None:
    table = SlotTable(shared_area(1), 0, 1)
    table.add("x" * 500)
    table.add("y")
    assert sorted(table.totals().items()) == [("x" * KEY_BYTES, 1.0), ("y", 1.0)]


def test_a_slot_outside_the_area_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        SlotTable(shared_area(2), 2, 3)


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_metrics_in_process_count_routes_not_paths_and_few_methods(client: Client) -> None:
    """Outside uWSGI a process counts alone; routes are patterns, unknown paths and methods are
    one label each (a client cannot grow the series)."""
    before = samples(client.get("/metrics").get_data(as_text=True))
    opened = client.post("/accounts", json={"owner": "ann"}).json
    assert opened is not None
    client.post(f"/accounts/{opened['id']}/deposits", json={"amount": 5})
    for path in ("/no/such", "/other"):
        client.get(path)
    client.open("/health", method="BREW")
    after = samples(client.get("/metrics").get_data(as_text=True))

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert (
        grew("uwsgi_es_requests_total", method="POST", route="/accounts/<account_id>/deposits", status="200")
        == 1
    )
    assert grew("uwsgi_es_requests_total", method="GET", route="unmatched", status="404") == 2
    assert grew("uwsgi_es_requests_total", method="other", route="unmatched", status="405") == 1
    assert grew("uwsgi_es_requests_total", method="GET", route="/metrics", status="200") == 1
    assert grew("uwsgi_es_request_duration_seconds_count", method="POST", route="/accounts") == 1
    assert grew("uwsgi_es_events_stored_total") == 2
    assert grew("uwsgi_es_commands_total", outcome="done") == 1
    assert after[("uwsgi_es_projection_lag_events", (("projection", "balances"),))] >= 0
    assert recorder.problem(multiprocess=False) is None


def without_the_multiprocess_flag(environ: dict[str, Any], start_response: Any) -> Any:
    """The application under a server that does not say whether it runs several processes."""
    del environ["wsgi.multiprocess"]
    return application(environ, start_response)


@pytest.mark.parametrize("multiprocess", [True, "unsaid"])
def test_metrics_outside_uwsgi_refuse_to_speak_for_several_processes(
    client: Client, multiprocess: bool | str
) -> None:
    """A server that runs the application in several processes (``wsgi.multiprocess`` true, or
    not said) gets 503 naming UWSGI_ES_METRICS_DIR and uWSGI's sharedarea: one process's numbers
    would pass for all of them.
    The other routes go on; a single-process server (the flag false) still gets the numbers."""
    if multiprocess == "unsaid":
        scraper = Client(from_address(without_the_multiprocess_flag, "127.0.0.1"))
        answer = scraper.get("/metrics")
        assert scraper.get("/health").status_code == 200
    else:
        answer = client.get("/metrics", environ_overrides={"wsgi.multiprocess": True})
        assert client.get("/health", environ_overrides={"wsgi.multiprocess": True}).status_code == 200
    assert answer.status_code == 503
    assert answer.json is not None
    error = answer.json["error"]
    assert "sharedarea = 160" in error
    assert "uwsgi.ini" in error
    assert "Set UWSGI_ES_METRICS_DIR" in error
    assert recorder.problem(multiprocess=True) == error
    assert client.get("/metrics", environ_overrides={"wsgi.multiprocess": False}).status_code == 200


def test_metrics_are_for_operators_only(client: Client) -> None:
    stranger = Client(from_address(application, "203.0.113.9"))
    answer = stranger.get("/metrics")
    assert answer.status_code == 404
    assert answer.json == {"error": "no route for '/metrics'"}


def test_openmetrics_when_the_scraper_asks_for_it(client: Client) -> None:
    answer = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.get_data(as_text=True).endswith("# EOF\n")


def test_a_full_slot_keeps_room_for_server_errors() -> None:
    """However many routes an application has, new 2xx-4xx series stop taking entries when a slot
    is down to its reserve (they are counted under other/unmatched/4xx), so 5xx series still fit;
    HEAD counts as GET, an odd status as its class."""
    table = SlotTable(memoryview(bytearray(SLOT_BYTES)), 0, 1)
    here = recorder._Attached(0, table, None)
    for n in range(100):  # an application with 100 routes, each answering a 404
        recorder._request_numbers(here, "GET", f"/route/{n}", 404)
    assert table.room() >= recorder.RESERVED - 17  # less only the series the others were folded into
    for n in range(20):  # the outage: each route that has its series answers 503 (one entry each)
        counter, _, _ = recorder._request_numbers(here, "GET", f"/route/{n}", 503)
        assert counter != table.base // 8 + 1, "a 503 series found the slot full"
    assert table.dropped() == 0
    keys = set(table.index)
    assert recorder.key(recorder.REQUESTS, "other", "unmatched", "4xx") in keys
    assert recorder.key(recorder.REQUESTS, "GET", "/route/19", 503) in keys
    assert recorder.key(recorder.REQUESTS, "GET", "/route/99", 404) not in keys
    assert recorder.labels_of("HEAD", "/health", 299) == ("GET", "2xx")
    assert recorder.labels_of("HEAD", "unmatched", 404) == ("HEAD", "404")
    assert recorder.labels_of("BREW", "/health", 405) == ("other", "405")
