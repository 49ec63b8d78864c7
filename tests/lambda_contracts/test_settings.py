"""Settings: read once from LAMBDA_* variables, typed, with clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lambda_contracts.settings import Settings
from lambda_contracts.topics import platform_topics

pytestmark = pytest.mark.unit


def test_environment_values_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("LAMBDA_DATA_DIR", "/srv/lambda")
    monkeypatch.setenv("LAMBDA_PRODUCER_COMPRESSION", "lz4")
    settings = Settings()
    assert settings.topic_partitions == 12
    assert settings.data_dir == Path("/srv/lambda")
    assert settings.producer_compression == "lz4"


def test_bad_values_are_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_TOPIC_PARTITIONS", "many")
    with pytest.raises(ValidationError, match="topic_partitions"):
        Settings()


def test_same_port_for_broker_and_controller_is_refused() -> None:
    with pytest.raises(ValidationError, match="must differ"):
        Settings(broker_port=9092, broker_controller_port=9092)


def test_bootstrap_is_the_local_broker_unless_a_cluster_is_given() -> None:
    assert Settings(broker_port=9500).bootstrap_servers == "127.0.0.1:9500"
    remote = Settings(kafka_bootstrap_servers="k1:9092,k2:9092")
    assert remote.bootstrap_servers == "k1:9092,k2:9092"
    assert not remote.uses_local_broker


def test_topics_follow_settings() -> None:
    events, dead_letters = platform_topics(
        Settings(
            kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092,kafka-3:9092",
            topic_partitions=9,
            topic_replication_factor=3,
            topic_min_insync_replicas=2,
            events_retention_hours=2,
        )
    )
    assert (events.name, events.partitions, events.replication_factor) == ("events", 9, 3)
    assert events.configs["retention.ms"] == str(2 * 3_600_000)
    assert events.configs["min.insync.replicas"] == "2"
    assert dead_letters.name == "events.dlq"


def test_a_local_cluster_has_one_or_three_nodes_on_spaced_ports() -> None:
    cluster = Settings(broker_nodes=3, broker_port=9400, broker_controller_port=9401, topic_replication_factor=3)
    assert cluster.local_broker_ports == [(9400, 9401), (9500, 9501), (9600, 9601)]
    assert cluster.bootstrap_servers == "127.0.0.1:9400,127.0.0.1:9500,127.0.0.1:9600"
    with pytest.raises(ValueError, match="must be 1 or 3"):
        Settings(broker_nodes=2)
    with pytest.raises(ValueError, match="LAMBDA_BROKER_NODES=1"):
        Settings(topic_replication_factor=3)


def test_status_thresholds_come_from_settings() -> None:
    assert Settings(batch_interval_minutes=60).batch_stale_after_s == (2 * 60 + 5) * 60
    assert Settings(status_batch_stale_minutes=3).batch_stale_after_s == 180
    assert Settings(serving_refresh_seconds=4).serving_stale_after_s == 20
    assert Settings(status_serving_stale_seconds=2).serving_stale_after_s == 2
    assert "LAMBDA_STATUS_BATCH_STALE_MINUTES" not in Settings().as_env(), "unset: the child derives it too"
    assert Settings(status_batch_stale_minutes=3).as_env()["LAMBDA_STATUS_BATCH_STALE_MINUTES"] == "3.0"
