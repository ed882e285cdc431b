"""The numbers in Prometheus' text format, written by ``prometheus_client`` (imported on the first
scrape only: a worker that is never scraped does not carry it).

The counters and the latency histogram are the sums of every worker's and mule's slot
(``uwsgi_es.metrics.recorder``); gauges (each projection's position and lag) are read when scraped,
by the caller, and handed in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from uwsgi_es.metrics import recorder
from uwsgi_es.metrics.recorder import BUCKETS, DURATION, DURATION_SUM, FAMILIES, SEPARATOR

_importing = threading.Lock()
_imported = False


def _import_prometheus_client() -> None:
    """Import prometheus_client once, one thread at a time: its package and its ``metrics`` module
    import each other, and two threads importing them at once (two first scrapes on an ASGI
    server's thread pool) can each get the other's half-initialised module (ImportError)."""
    global _imported
    if _imported:  # a flag, not sys.modules: a module is there before its import has finished
        return
    with _importing:
        import prometheus_client.core
        import prometheus_client.exposition  # noqa: F401

        _imported = True


def render(
    gauges: Mapping[str, tuple[str, str, Mapping[tuple[str, ...], float]]], accept: str = ""
) -> tuple[bytes, str]:
    """(body, content type) of a scrape, in the format the scraper's ``Accept`` asks for (the
    Prometheus text format, or OpenMetrics). ``gauges``: name -> (help, label name, {labels: value})."""
    _import_prometheus_client()
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import Collector, CollectorRegistry

    totals, dropped = recorder.totals()

    class Numbers(Collector):
        def collect(self) -> Iterator[Any]:
            yield from _families(totals, dropped, gauges)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Numbers())
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


def _families(
    totals: dict[str, float],
    dropped: float,
    gauges: Mapping[str, tuple[str, str, Mapping[tuple[str, ...], float]]],
) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    by_family: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    for key, value in totals.items():
        name, *parts = key.split(SEPARATOR)
        by_family.setdefault(name, []).append((tuple(parts), value))
    for name, family in FAMILIES.items():
        if family.kind == "histogram":
            histogram = HistogramMetricFamily(family.name, family.help, labels=family.labels)
            yield _histogram(histogram, by_family.get(DURATION, []), by_family.get(DURATION_SUM, []))
            continue
        counter = CounterMetricFamily(family.name, family.help, labels=family.labels)
        for labels, value in sorted(by_family.get(name, [])):
            if len(labels) == len(family.labels):
                counter.add_metric(list(labels), value)
        yield counter
    yield CounterMetricFamily(
        "uwsgi_es_metrics_dropped",
        "Counts lost because a process's slot was full (widen the sharedarea or keep labels few).",
        value=dropped,
    )
    for name, (help_text, label, values) in gauges.items():
        gauge = GaugeMetricFamily(name, help_text, labels=[label])
        for labels, value in sorted(values.items()):
            gauge.add_metric(list(labels), value)
        yield gauge


def _histogram(
    histogram: Any,
    buckets: list[tuple[tuple[str, ...], float]],
    sums: list[tuple[tuple[str, ...], float]],
) -> Any:
    """The latency histogram: each bucket's count is kept on its own, made cumulative here."""
    counts: dict[tuple[str, ...], list[float]] = {}
    for labels, value in buckets:
        bucket = labels[-1]
        if bucket.isdigit() and int(bucket) <= len(BUCKETS):
            counts.setdefault(labels[:-1], [0.0] * (len(BUCKETS) + 1))[int(bucket)] += value
    sum_of = dict(sums)
    for series, per_bucket in sorted(counts.items()):
        cumulative, running = [], 0.0
        for bound, count in zip([*map(_bound, BUCKETS), "+Inf"], per_bucket, strict=True):
            running += count
            cumulative.append((bound, running))
        histogram.add_metric(list(series), cumulative, sum_of.get(series, 0.0))
    return histogram


def _bound(seconds: float) -> str:
    return repr(float(seconds))
