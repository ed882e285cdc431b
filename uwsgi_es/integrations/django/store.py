"""A record store on the Django ORM (``UWSGI_ES_STORE=django``), on the project's ``default`` database.

Django opens connections lazily, per thread, and closes them at the end of each request itself;
this store adds the optimistic-concurrency contract: a batch is one ``atomic`` block, and the
unique (originator_id, originator_version) constraint turns a conflicting batch into
``ConcurrencyError`` with nothing stored. It is built in the worker after the fork; any connection
the process inherited is forgotten there, never closed (closing would end the parent's session).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from uuid import UUID

from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connections, transaction

from uwsgi_es.errors import SchemaMissingError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import RecordStore, StoredRecord, version_conflict

from .models import StoredEvent


class DjangoRecordStore(RecordStore):
    """Records through the Django ORM, on the project's database. A ``GlobalFeed``."""

    @classmethod
    def from_settings(cls, settings: Settings) -> DjangoRecordStore:
        return cls()

    def __init__(self, alias: str = "default") -> None:
        super().__init__()
        self.alias = alias
        for connection in connections.all(initialized_only=True):
            connection.connection = None  # inherited across fork: forget, never close

    def describe(self) -> str:
        return f"Django store on the {self.alias!r} database ({connections[self.alias].vendor})"

    def create_schema(self) -> None:
        call_command("migrate", "uwsgi_es_django", database=self.alias, verbosity=0)

    def append(self, records: Sequence[StoredRecord]) -> None:  # no position (no projection runner)
        self.check_process()
        rows = [
            StoredEvent(
                originator_id=r.originator_id,
                originator_version=r.originator_version,
                topic=r.topic,
                state=r.state,
            )
            for r in records
        ]
        try:
            with self._errors(), transaction.atomic(using=self.alias):
                StoredEvent.objects.using(self.alias).bulk_create(rows)
        except IntegrityError as exc:
            raise version_conflict(records) from exc

    def select(
        self, originator_id: UUID, *, after_version: int = 0, limit: int | None = None
    ) -> list[StoredRecord]:
        self.check_process()
        with self._errors():
            rows = (
                StoredEvent.objects.using(self.alias)
                .filter(originator_id=originator_id, originator_version__gt=after_version)
                .order_by("originator_version")
            )
            if limit is not None:
                rows = rows[:limit]
            return [
                StoredRecord(originator_id, v, t, s, i)
                for v, t, s, i in rows.values_list("originator_version", "topic", "state", "id")
            ]

    def select_all(self, after_id: int, limit: int) -> list[StoredRecord]:
        self.check_process()
        with self._errors():
            rows = StoredEvent.objects.using(self.alias).filter(id__gt=after_id).order_by("id")[:limit]
            return [
                StoredRecord(o, v, t, s, i)
                for o, v, t, s, i in rows.values_list(
                    "originator_id", "originator_version", "topic", "state", "id"
                )
            ]

    def ping(self) -> None:
        self.check_process()
        with self._errors():
            StoredEvent.objects.using(self.alias).exists()

    def _release(self) -> None:
        connections[self.alias].close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except DatabaseError as exc:
            if "no such table" in str(exc) or "does not exist" in str(exc):
                raise SchemaMissingError(
                    f"The table integer_sequenced_items does not exist in {self.describe()}: "
                    "run manage.py migrate"
                ) from exc
            raise self.unavailable(exc) from exc
