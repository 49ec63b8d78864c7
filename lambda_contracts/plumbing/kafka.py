"""How every component talks to the platform's Kafka: one place for client settings.

Producers are idempotent with ``acks=all`` by default, so a retried batch is never written
twice and an acknowledged record survives a broker restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Client settings for a producer of platform records (events or dead letters)."""
    acks: int | str = -1 if settings.producer_acks == "all" else int(settings.producer_acks)
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "acks": acks,
        "enable_idempotence": acks == -1,
        "compression_type": None if settings.producer_compression == "none" else settings.producer_compression,
        "linger_ms": settings.producer_linger_ms,
        "batch_size": settings.producer_batch_bytes,
        "delivery_timeout_ms": settings.producer_delivery_timeout_ms,
        "bootstrap_timeout_ms": int(settings.kafka_connect_timeout_s * 1000),
        "max_block_ms": 15_000,
    }
    config.update(overrides)
    return config


def new_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    return KafkaProducer(**producer_config(settings, **overrides))


def new_consumer(settings: Settings, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    """A consumer that never commits on its own: components commit where their output lands."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "bootstrap_timeout_ms": int(settings.kafka_connect_timeout_s * 1000),
        "session_timeout_ms": settings.consumer_session_timeout_ms,
        "heartbeat_interval_ms": max(1000, settings.consumer_session_timeout_ms // 5),
    }
    config.update(overrides)
    return KafkaConsumer(**config)


def subscribe_when_known(consumer: KafkaConsumer, topic: str, timeout_s: float = 30.0) -> None:
    """Subscribe once the client knows the topic's partitions.

    A member that joins its group before its metadata lists the topic is assigned nothing by the
    range assignor (kafka-python logs "No partition metadata") and may stay idle; fetching the
    partitions first avoids that.
    """
    deadline = time.monotonic() + timeout_s
    while not _partitions_known(consumer, topic, deadline):
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"topic {topic} has no partitions after {timeout_s:.0f}s: create it first")
        time.sleep(0.1)  # the client is fetching metadata; asking again is the readiness check
    consumer.subscribe([topic])


def _partitions_known(consumer: KafkaConsumer, topic: str, deadline: float) -> bool:
    """Whether the client knows ``topic``'s partitions; a node that refuses the metadata request (killed or
    restarting while the others serve) is asked around again until ``deadline``, not fatal at start."""
    try:
        return bool(consumer.partitions_for_topic(topic))
    except KafkaError as error:
        if not error.retriable or time.monotonic() > deadline:
            raise
        log.info("topic metadata not fetched yet (%s): asking another node", error)
        return False


@contextmanager
def admin_client(settings: Settings, timeout_s: float | None = None) -> Iterator[KafkaAdminClient]:
    """An admin client that is closed on exit; fails with a hint when no broker answers."""
    timeout_ms = int((timeout_s or settings.kafka_connect_timeout_s) * 1000)
    client = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=min(timeout_ms, 30_000),
    )
    try:
        yield client
    finally:
        client.close()


@contextmanager
def quiet_kafka_logs(level: int = logging.CRITICAL) -> Iterator[None]:
    """Silence kafka-python's connection errors while we poll on purpose (readiness checks)."""
    logger = logging.getLogger("kafka")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def topic_offsets(consumer: KafkaConsumer, topic: str, beginning: bool = False) -> dict[int, int]:
    """Partition -> end offset (or first offset) of ``topic``; empty if the topic does not exist."""
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    offsets = consumer.beginning_offsets(partitions) if beginning else consumer.end_offsets(partitions)
    return {tp.partition: offset for tp, offset in offsets.items()}


def events_end_offsets(settings: Settings) -> dict[int, int]:
    """Partition -> end offset of the events topic, for every partition the settings declare (0 if empty)."""
    consumer = new_consumer(settings, group_id=None)
    try:
        return dict.fromkeys(range(settings.topic_partitions), 0) | topic_offsets(consumer, settings.events_topic)
    finally:
        consumer.close(autocommit=False)
