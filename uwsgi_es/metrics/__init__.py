"""Metrics for the whole uWSGI instance, in Prometheus' text format.

- ``table``: named numbers in shared memory, one slot per worker and mule, summed when read;
- ``recorder``: what uwsgi_es counts (requests, commands, conflicts, events, builds, checkouts),
  and which slot this process counts into;
- ``exposition``: the scrape body, written by ``prometheus_client``.
"""
