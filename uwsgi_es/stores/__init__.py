"""Record stores: the contract (``base``) and one module per backend.

``create_record_store`` picks the backend the settings name. Backends are imported here lazily,
so a deployment only needs the drivers of the store it uses.
"""

from __future__ import annotations

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import RecordStore, StoredRecord

__all__ = ["RecordStore", "StoredRecord", "create_record_store"]


def create_record_store(settings: Settings) -> RecordStore:
    """Connect to the store the settings name. Call it in the process that will use the store."""
    if settings.store == "django":
        from uwsgi_es.adapters.django.store import DjangoRecordStore  # needs a configured Django

        return DjangoRecordStore()
    if settings.store == "cassandra":
        try:
            from uwsgi_es.stores.cassandra import CassandraRecordStore
        except ImportError as exc:
            raise ConfigurationError(
                f"UWSGI_ES_STORE=cassandra needs cassandra-driver ({exc}): pip install 'uwsgi_es[cassandra]'"
            ) from exc
        return CassandraRecordStore.from_settings(settings)
    from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore

    return SQLAlchemyRecordStore.from_settings(settings)
