"""Record stores: the contract (``base``) and one module per backend.

``create_record_store`` picks the backend the settings name. The backends are named here as
strings and imported on first use, so a deployment only needs the drivers of the store it uses,
and the core never imports an integration (the Django store lives with the Django integration).

The rule: a store may import the leaves (``errors``, ``settings``, ``redaction``), ``runtime`` and
``metrics``, never the core (``application``, ``domain``), the web layer or the lifecycle; it never
connects at import time, and a store built before a fork refuses to be used after it.
"""

from __future__ import annotations

import importlib

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import (
    GlobalFeed,
    IdempotentWrites,
    RecordStore,
    RequestScope,
    Snapshot,
    SnapshotStore,
    StoredRecord,
)

__all__ = [
    "BACKENDS",
    "GlobalFeed",
    "IdempotentWrites",
    "RecordStore",
    "RequestScope",
    "Snapshot",
    "SnapshotStore",
    "StoredRecord",
    "create_record_store",
]

# UWSGI_ES_STORE -> (module, class, what to install when its driver is missing)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "sqlalchemy": ("uwsgi_es.stores.sqlalchemy", "SQLAlchemyRecordStore", "uwsgi_es"),
    "cassandra": ("uwsgi_es.stores.cassandra", "CassandraRecordStore", "'uwsgi_es[cassandra]'"),
    "django": ("uwsgi_es.integrations.django.store", "DjangoRecordStore", "'uwsgi_es[django]'"),
}


def create_record_store(settings: Settings) -> RecordStore:
    """Connect to the store the settings name. Call it in the process that will use the store."""
    module_name, class_name, extra = BACKENDS[settings.store]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"UWSGI_ES_STORE={settings.store} needs a driver that is not installed ({exc}): "
            f"pip install {extra}"
        ) from exc
    store: RecordStore = getattr(module, class_name).from_settings(settings)
    return store
