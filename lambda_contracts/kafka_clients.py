"""How every component talks to the platform's Kafka: one place for client settings.

Producers are idempotent with ``acks=all`` by default, so a retried batch is never written
twice and an acknowledged record survives a broker restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from lambda_contracts.settings import Settings


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
