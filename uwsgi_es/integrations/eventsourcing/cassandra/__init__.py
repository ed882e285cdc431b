"""Cassandra persistence for the eventsourcing library:
``PERSISTENCE_MODULE=uwsgi_es.integrations.eventsourcing.cassandra``.

An aggregate recorder (one partition per aggregate, lightweight transactions, a write that got
no answer settled by sending it again), an application and a process recorder (a gap-free
notification log, serialised through one lightweight-transaction "head" row per application),
and a tracking recorder. See ``recorders`` for the design and its price, ``datastore`` for the settings.
"""

from __future__ import annotations

from uwsgi_es.integrations.eventsourcing.cassandra.factory import CassandraFactory
from uwsgi_es.integrations.eventsourcing.cassandra.recorders import (
    CassandraAggregateRecorder,
    CassandraApplicationRecorder,
    CassandraProcessRecorder,
    CassandraSubscription,
    CassandraTrackingRecorder,
)

Factory = CassandraFactory

__all__ = [
    "CassandraAggregateRecorder",
    "CassandraApplicationRecorder",
    "CassandraFactory",
    "CassandraProcessRecorder",
    "CassandraSubscription",
    "CassandraTrackingRecorder",
    "Factory",
]
