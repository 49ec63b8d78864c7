"""Reading topics back in tests: everything up to the end offsets, so no sleeps are needed."""

from __future__ import annotations

import time
from typing import Any

from kafka import TopicPartition

from lambda_contracts.kafka_clients import new_consumer
from lambda_contracts.settings import Settings


def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record now in ``topic``, per partition in offset order."""
    consumer = new_consumer(settings, group_id=None)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {ends} in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)
