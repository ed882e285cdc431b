"""The SQL record store (SQLite and PostgreSQL): ``schema`` (tables and statements), ``engine``
(engines per process, error meanings), ``writers`` (SQLite's bounded writer queue), ``datastore``
(connections, transactions, the retry on a dropped connection, errors: what our store and the read
side share), ``store`` (our record store's statements)."""

from __future__ import annotations

from uwsgi_es.stores.sqlalchemy.datastore import SQLAlchemyDatastore
from uwsgi_es.stores.sqlalchemy.engine import create_engine_from_settings
from uwsgi_es.stores.sqlalchemy.schema import heartbeat_table, metadata, records_table
from uwsgi_es.stores.sqlalchemy.store import SQLAlchemyRecordStore

__all__ = [
    "SQLAlchemyDatastore",
    "SQLAlchemyRecordStore",
    "create_engine_from_settings",
    "heartbeat_table",
    "metadata",
    "records_table",
]
