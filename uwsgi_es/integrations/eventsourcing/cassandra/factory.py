"""``CassandraFactory``: the library's infrastructure factory for Cassandra.

Tables are named after the application (``<name>_events``, ``_snapshots``, ``_notifications``,
``_head``, ``_tracking``), in ``CASSANDRA_KEYSPACE``. The settings are ours (``UWSGI_ES_CASSANDRA_*``),
each also read under the library's name (``CASSANDRA_HOSTS``..., and with the application's name
as a prefix), which wins; the keyspace defaults to ``eventsourcing``. ``CREATE_TABLE`` (default yes, as in the
library) creates the keyspace and tables when a recorder is made; uwsgi_es's workers build with
it off and ``uwsgi-es migrate`` builds once with it on. Nothing connects until first use.
"""

from __future__ import annotations

import re
from typing import Any, Literal, cast

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from uwsgi_es.integrations.eventsourcing.cassandra.recorders import (
    CassandraAggregateRecorder,
    CassandraApplicationRecorder,
    CassandraProcessRecorder,
    CassandraTrackingRecorder,
    LibraryDatastore,
)
from uwsgi_es.settings import resolve
from uwsgi_es.stores.cassandra.datastore import CassandraConfig


class CassandraFactory(InfrastructureFactory[CassandraTrackingRecorder]):
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    CREATE_TABLE = "CREATE_TABLE"

    aggregate_recorder_class = CassandraAggregateRecorder
    application_recorder_class = CassandraApplicationRecorder
    tracking_recorder_class = CassandraTrackingRecorder
    process_recorder_class = CassandraProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self.datastore = LibraryDatastore(CassandraConfig.from_library_env(self.env.get, resolve()[0]))
        id_type = str(self.env.get(self.ORIGINATOR_ID_TYPE, "uuid")).lower()
        if id_type not in ("uuid", "text"):
            raise OSError(f"Invalid {self.ORIGINATOR_ID_TYPE} {id_type!r}: use 'uuid' or 'text'")
        self.originator_id_type = cast(Literal["uuid", "text"], id_type)

    def prefix(self) -> str:
        """The application's name as a table-name prefix (lower case, letters, digits, _)."""
        return re.sub(r"[^a-z0-9_]", "_", (self.env.name or "stored").lower())[:30]

    def _made(self, recorder: Any) -> Any:
        if self.env_create_table():
            recorder.create_table()
        return recorder

    def aggregate_recorder(self, purpose: str = "events") -> CassandraAggregateRecorder:
        return cast(
            CassandraAggregateRecorder,
            self._made(
                self.aggregate_recorder_class(
                    self.datastore, self.prefix(), purpose, originator_id_type=self.originator_id_type
                )
            ),
        )

    def application_recorder(self) -> CassandraApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.application_recorder_class
        return cast(
            CassandraApplicationRecorder,
            self._made(cls(self.datastore, self.prefix(), originator_id_type=self.originator_id_type)),
        )

    def tracking_recorder(
        self, tracking_recorder_class: type[CassandraTrackingRecorder] | None = None
    ) -> CassandraTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else self.tracking_recorder_class
        return cast(
            CassandraTrackingRecorder, self._made(tracking_recorder_class(self.datastore, self.prefix()))
        )

    def process_recorder(self) -> CassandraProcessRecorder:
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.process_recorder_class
        return cast(
            CassandraProcessRecorder,
            self._made(cls(self.datastore, self.prefix(), originator_id_type=self.originator_id_type)),
        )

    def env_create_table(self) -> bool:
        return bool(strtobool(self.env.get(self.CREATE_TABLE) or "yes"))

    def check_writable(self) -> None:
        """What /ready asks: a write at the configured consistency goes through (a counter in
        its own table, never on a partition the recorders write with lightweight transactions).
        `uwsgi-es migrate` checks the store it migrated: the table is made then."""
        self.datastore.beat(create=self.env_create_table())

    def close(self) -> None:
        self.datastore.close()
