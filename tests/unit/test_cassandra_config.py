"""One settings family for Cassandra under both engines: ours (``UWSGI_ES_CASSANDRA_*``), with the
library's names (``CASSANDRA_*``, also under the application's name) read as aliases that win,
parsed and refused by the same declarations."""

from __future__ import annotations

import pytest
from eventsourcing.utils import Environment

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.settings import Settings
from uwsgi_es.stores.cassandra.datastore import CassandraConfig, build_cluster


def test_our_settings_make_the_config() -> None:
    settings = Settings.from_environ(
        {
            "UWSGI_ES_STORE": "cassandra",
            "UWSGI_ES_CASSANDRA_HOSTS": "10.0.0.1, 10.0.0.2",
            "UWSGI_ES_CASSANDRA_PORT": "9142",
        }
    )
    config = CassandraConfig.from_settings(settings)
    assert config.host_list == ["10.0.0.1", "10.0.0.2"]
    assert (config.port, config.keyspace, config.speculative_delay) == (9142, "uwsgi_es", 0.5)
    assert config.replication_map == {"class": "SimpleStrategy", "replication_factor": "1"}
    assert config.describe() == settings.describe_store()


def test_the_library_names_are_aliases_that_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UWSGI_ES_CASSANDRA_KEYSPACE", raising=False)
    settings = Settings.from_environ(
        {"UWSGI_ES_CASSANDRA_PORT": "9142", "UWSGI_ES_CASSANDRA_LOCAL_DC": "dc9"}
    )
    env = Environment(
        "Dogs",
        {
            "CASSANDRA_PORT": "9242",
            "DOGS_CASSANDRA_HOSTS": "10.1.1.1",
            "CASSANDRA_REPLICATION": "NetworkTopologyStrategy:dc1=3,dc2=2",
            "CASSANDRA_CONSISTENCY": "local_one",
        },
    )
    config = CassandraConfig.from_library_env(env.get, settings)
    assert (config.port, config.hosts, config.local_dc) == (9242, "10.1.1.1", "dc9")
    assert config.keyspace == "eventsourcing"  # the library module's default keyspace
    assert config.consistency == "LOCAL_ONE"
    assert config.replication_map == {"class": "NetworkTopologyStrategy", "dc1": "3", "dc2": "2"}


def test_our_keyspace_setting_is_kept_for_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UWSGI_ES_CASSANDRA_KEYSPACE", "shared")
    config = CassandraConfig.from_library_env(Environment("", {}).get, Settings.from_environ())
    assert config.keyspace == "shared"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CASSANDRA_PORT", "ninety", "CASSANDRA_PORT='ninety'"),
        ("CASSANDRA_KEYSPACE", "no-dashes", "not a valid keyspace name"),
        ("CASSANDRA_REPLICATION", "SimpleStrategy:0", "not a replication"),
        ("CASSANDRA_SERIAL_CONSISTENCY", "QUORUM", "serial consistency level"),
        ("CASSANDRA_REACTOR", "twisted", "reactor"),
    ],
)
def test_a_bad_library_value_is_refused_naming_the_variable_set(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=variable) as refused:
        CassandraConfig.from_library_env(Environment("", {variable: value}).get, Settings())
    assert says in str(refused.value)


def test_one_cluster_builder_sets_every_policy_explicitly() -> None:
    """Building a cluster connects to nothing; the reactor, policies and protocol are ours."""
    config = CassandraConfig.from_settings(
        Settings(cassandra_reactor="asyncio", cassandra_speculative_delay=0.0)
    )
    cluster = build_cluster(config)
    profile = cluster.profile_manager.default
    assert cluster.connection_class.__name__ == "AsyncioConnection"
    assert cluster.protocol_version == 5
    assert type(profile.speculative_execution_policy).__name__ == "NoSpeculativeExecutionPolicy"
    assert type(profile.load_balancing_policy).__name__ == "TokenAwarePolicy"
    cluster.shutdown()
