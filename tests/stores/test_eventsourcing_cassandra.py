"""uwsgi_es's Cassandra persistence for the eventsourcing library, judged by the library's own test
suite (the abstract test cases it ships in its wheel), against the real Cassandra node of the run.

Each test gets a keyspace of its own, so every recorder starts empty, as the cases expect. The
library's modules are imported, not their classes, so pytest collects only the subclasses here.
"""

from __future__ import annotations

import os
import unittest
from typing import Any
from uuid import uuid4

import pytest
from cassandra import WriteTimeout, WriteType
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests import application as library_application
from eventsourcing.tests import persistence as library_persistence
from eventsourcing.utils import Environment

from uwsgi_es.integrations.eventsourcing.cassandra import (
    CassandraAggregateRecorder,
    CassandraApplicationRecorder,
    CassandraFactory,
    CassandraProcessRecorder,
    CassandraTrackingRecorder,
)
from uwsgi_es.testing.cassandra import CassandraNode

pytestmark = pytest.mark.cassandra
MODULE = "uwsgi_es.integrations.eventsourcing.cassandra"


@pytest.fixture(autouse=True)
def _node(request: pytest.FixtureRequest, cassandra: CassandraNode) -> None:
    """Give each library test case the node's port and a fresh keyspace."""
    request.cls.cassandra_port = cassandra.native_port
    request.cls.keyspace = f"es_{uuid4().hex[:16]}"


class CassandraTestCase:
    cassandra_port: int
    keyspace: str
    factories: list[CassandraFactory]

    def factory(self, name: str = "") -> CassandraFactory:
        env = Environment(
            name,
            {
                "PERSISTENCE_MODULE": MODULE,
                "CASSANDRA_PORT": str(self.cassandra_port),
                "CASSANDRA_KEYSPACE": self.keyspace,
                "CREATE_TABLE": "y",
            },
        )
        factory = InfrastructureFactory.construct(env)
        assert isinstance(factory, CassandraFactory)
        self.factories = [*getattr(self, "factories", []), factory]
        return factory

    def tearDown(self) -> None:
        for factory in getattr(self, "factories", []):
            factory.close()
        super().tearDown()  # type: ignore[misc]


class TestAggregateRecorder(CassandraTestCase, library_persistence.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.factory("Bank").aggregate_recorder()


class TestApplicationRecorder(
    CassandraTestCase, library_persistence.ApplicationRecorderTestCase[ApplicationRecorder]
):
    def create_recorder(self) -> ApplicationRecorder:
        return self.factory("Bank").application_recorder()

    def test_insert_subscribe(self) -> None:
        """The library's optional subscription case, run: a polling subscription follows the log."""
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(CassandraTestCase, library_persistence.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.factory("Projection").tracking_recorder()


class TestProcessRecorder(CassandraTestCase, library_persistence.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.factory("Process").process_recorder()


class SubclassOfTrackingRecorder(CassandraTrackingRecorder):
    pass


class TestInfrastructureFactory(
    CassandraTestCase, library_persistence.InfrastructureFactoryTestCase[CassandraFactory]
):
    def setUp(self) -> None:
        self.env = Environment(
            "Bank",
            {
                "PERSISTENCE_MODULE": MODULE,
                "CASSANDRA_PORT": str(self.cassandra_port),
                "CASSANDRA_KEYSPACE": self.keyspace,
            },
        )
        super().setUp()

    def expected_factory_class(self) -> type[CassandraFactory]:
        return CassandraFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return CassandraAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return CassandraApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return CassandraTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return SubclassOfTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return CassandraProcessRecorder


class TestExampleApplication(CassandraTestCase, library_application.ExampleApplicationTestCase):
    expected_factory_topic = f"{MODULE}.factory:CassandraFactory"

    def setUp(self) -> None:
        super().setUp()
        self.saved = {k: os.environ.get(k) for k in self.variables()}
        os.environ.update(self.variables())

    def variables(self) -> dict[str, Any]:
        return {
            "PERSISTENCE_MODULE": MODULE,
            "CASSANDRA_PORT": str(self.cassandra_port),
            "CASSANDRA_KEYSPACE": self.keyspace,
        }

    def tearDown(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        super().tearDown()


class TestAWriteWithoutAnAnswerIsSettled(CassandraTestCase, unittest.TestCase):
    """The recorder's "maybe applied" path, against what the node really holds: sent again, the
    write is applied if the first never was; not applied, its versions hold ours or someone else's."""

    def test_settled_by_sending_it_again(self) -> None:
        recorder = self.factory("Bank").aggregate_recorder()
        assert isinstance(recorder, CassandraAggregateRecorder)
        timeout = WriteTimeout("a CAS write timed out", write_type=WriteType.CAS)
        originator = uuid4()
        ours = [StoredEvent(originator, v, "topic", f"state {v}".encode()) for v in (1, 2)]
        recorder.insert_events(ours)
        assert recorder._settle_write(recorder._conditional_write(ours), ours, timeout) is True
        theirs = [StoredEvent(originator, e.originator_version, "topic", b"someone else") for e in ours]
        assert recorder._settle_write(recorder._conditional_write(theirs), theirs, timeout) is False
        never_arrived = [StoredEvent(originator, 3, "topic", b"state 3")]
        write = recorder._conditional_write(never_arrived)
        assert recorder._settle_write(write, never_arrived, timeout) is True
        assert recorder.select_events(originator) == ours + never_arrived
