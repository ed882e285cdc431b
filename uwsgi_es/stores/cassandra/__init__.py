"""Cassandra: ``datastore`` (one process's cluster, settings, conditional writes settled by their
own rows, errors; shared with the eventsourcing library's recorders) and ``store`` (our record
store: its statements only)."""

from __future__ import annotations

from uwsgi_es.stores.cassandra.datastore import CassandraConfig, CassandraDatastore
from uwsgi_es.stores.cassandra.store import CassandraRecordStore

__all__ = ["CassandraConfig", "CassandraDatastore", "CassandraRecordStore"]
