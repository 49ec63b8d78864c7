"""The local broker against reality: restarts keep data, a second start and a busy port are reported."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.kafka_node import container_node, format_storage, local_nodes, new_cluster_id, server_properties
from infra.local_broker import BrokerError, LocalBroker
from infra.topics import TopicMismatchError, ensure_topics
from lambda_contracts.events import SOURCES
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambda_contracts.topics import TopicSpec, platform_topics
from sources.producer import BatchingProducer
from sources.run import build_simulators, run_simulation
from tests.flows import EXTERNAL_BROKER_ENV, local_broker_settings, read_topic

needs_local_broker = pytest.mark.skipif(
    bool(os.environ.get(EXTERNAL_BROKER_ENV)), reason="manages the project's own local broker"
)


@pytest.mark.unit
def test_server_properties_are_kraft_combined_mode(tmp_path: Path) -> None:
    settings = Settings(broker_port=9500, broker_controller_port=9501)
    text = server_properties(settings, tmp_path, local_nodes(settings)[0])
    assert "process.roles=broker,controller" in text
    assert "controller.quorum.voters=1@127.0.0.1:9501" in text
    assert "listeners=PLAINTEXT://127.0.0.1:9500,CONTROLLER://127.0.0.1:9501" in text
    assert "auto.create.topics.enable=false" in text
    assert f"log.dirs={tmp_path}" in text


@pytest.mark.unit
def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """One random id in 64 would start with "-"; a CI run once drew one and the format refused it."""
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64 "-A..."
    draws = iter([dashed, uuid.UUID(int=1)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAQ"
    monkeypatch.undo()
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


@pytest.mark.integration
def test_storage_formats_even_with_an_id_that_looks_like_an_option(tmp_path: Path) -> None:
    """Ids made elsewhere (an operator's own .env) may start with "-": the format must still take it."""
    settings = Settings(broker_port=9500, broker_controller_port=9501)
    properties = tmp_path / "server.properties"
    properties.write_text(server_properties(settings, tmp_path / "logs", local_nodes(settings)[0]))
    cluster_id = base64.urlsafe_b64encode(bytes([0xF8]) + uuid.uuid4().bytes[1:]).decode().rstrip("=")
    assert cluster_id.startswith("-")
    assert format_storage(tmp_path / "logs", properties, tmp_path, cluster_id)
    assert f"cluster.id={cluster_id}" in (tmp_path / "logs" / "meta.properties").read_text()


@pytest.mark.unit
def test_a_container_node_listens_everywhere_and_is_advertised_by_name(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers="kafka-1:9092", topic_replication_factor=3, topic_min_insync_replicas=2)
    voters = "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    text = server_properties(settings, tmp_path, container_node(settings, 2, "kafka-2", voters))
    assert "node.id=2" in text and f"controller.quorum.voters={voters}" in text
    assert "listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093" in text
    assert "advertised.listeners=PLAINTEXT://kafka-2:9092" in text
    assert "offsets.topic.replication.factor=3" in text and "min.insync.replicas=2" in text
    broker_only = server_properties(
        settings, tmp_path, container_node(settings, 4, "kafka-4", voters, controller=False)
    )
    assert "process.roles=broker\n" in broker_only and "CONTROLLER://" not in broker_only.split("listeners=")[1]


@pytest.mark.unit
def test_status_of_a_broker_never_started(tmp_path: Path) -> None:
    status = LocalBroker(local_broker_settings(tmp_path)).status()
    assert not status.running and not status.ready
    assert "broker down" in status.describe()


@pytest.mark.integration
@needs_local_broker
def test_second_start_reports_the_running_broker(broker_settings: Settings) -> None:
    status, started = LocalBroker(broker_settings).start()
    assert not started
    assert status.ready and status.pid is not None
    assert "broker up at" in status.describe()


@pytest.mark.integration
@needs_local_broker
def test_a_port_in_use_is_reported_clearly(broker_settings: Settings, tmp_path: Path) -> None:
    clash = broker_settings.model_copy(update={"data_dir": tmp_path})
    with pytest.raises(
        BrokerError, match=rf"port {broker_settings.broker_port} .* already in use .*LAMBDA_BROKER_PORT"
    ):
        LocalBroker(clash).start()


@pytest.mark.integration
def test_topic_creation_is_idempotent_and_refuses_to_shrink(kafka: Settings) -> None:
    with admin_client(kafka) as admin:
        reports = ensure_topics(admin, platform_topics(kafka))
        assert [(r.partitions, r.created) for r in reports] == [(6, False), (6, False)]
        bigger = [TopicSpec(kafka.events_topic, 12, 1)]
        with pytest.raises(TopicMismatchError, match="has 6 partitions but settings ask for 12"):
            ensure_topics(admin, bigger)


def produce(settings: Settings, count: int, seed: int, acked: set[tuple[int, int]]) -> None:
    simulators = build_simulators(SOURCES, rate=1000.0, serde=JsonSerde(), start=datetime.now(UTC), seed=seed)
    producer = BatchingProducer(
        settings, settings.events_topic, on_delivery=lambda key, partition, offset: acked.add((partition, offset))
    )
    run_simulation(simulators, producer, count=count, realtime=False)


@pytest.mark.integration
@needs_local_broker
def test_stop_and_kill_keep_every_acknowledged_event(tmp_path: Path) -> None:
    settings = local_broker_settings(tmp_path)
    broker = LocalBroker(settings)
    try:
        broker.start()
        with admin_client(settings) as admin:
            ensure_topics(admin, platform_topics(settings))
        acked: set[tuple[int, int]] = set()
        produce(settings, 3000, seed=1, acked=acked)
        assert broker.stop()
        _, started = broker.start()
        assert started
        produce(settings, 3000, seed=2, acked=acked)
        assert broker.kill(), "a crash: SIGKILL, no controlled shutdown"
        broker.start()
        records = read_topic(settings, settings.events_topic)
        assert len(acked) == 6000
        assert {(r.partition, r.offset) for r in records} == acked
    finally:
        broker.stop()
