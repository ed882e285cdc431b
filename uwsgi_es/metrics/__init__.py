"""Metrics for the whole uWSGI instance, in Prometheus' text format.

- ``table``: named numbers in shared memory, one slot per worker and mule, summed when read;
- ``recorder``: what uwsgi_es counts (requests, commands, conflicts, events, builds, checkouts),
  and which slot this process counts into;
- ``exposition``: the scrape body, written by ``prometheus_client``.

The rule: imports only ``runtime`` (which process counts into which slot); every floor may count,
so nothing here may import the stores, the core or the web layer, and counting never raises into
the request it counts.
"""
