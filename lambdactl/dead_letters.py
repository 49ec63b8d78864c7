"""Reading the dead-letter topic back: how many records were rejected, and why."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import TopicPartition

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.plumbing.kafka import new_consumer
from lambda_contracts.settings import Settings


@dataclass(frozen=True)
class DeadLetterSummary:
    total: int
    """Records in the dead-letter topic now (within its retention)."""
    recent: list[DeadLetter]


def read_dead_letters(settings: Settings, last: int = 10, timeout_s: float = 10.0) -> DeadLetterSummary:
    """The dead-letter count and the ``last`` most recent letters across partitions."""
    consumer = new_consumer(settings, group_id=None, consumer_timeout_ms=int(timeout_s * 1000))
    try:
        partitions = consumer.partitions_for_topic(settings.dead_letter_topic) or set()
        tps = [TopicPartition(settings.dead_letter_topic, p) for p in sorted(partitions)]
        if not tps:
            raise RuntimeError(
                f"topic {settings.dead_letter_topic} does not exist; create it with `lambdactl topics create`"
            )
        consumer.assign(tps)
        begins, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        total = sum(ends[tp] - begins[tp] for tp in tps)
        wanted = 0
        for tp in tps:
            start = max(begins[tp], ends[tp] - last)
            consumer.seek(tp, start)
            wanted += ends[tp] - start
        letters: list[DeadLetter] = []
        for record in consumer:
            letters.append(DeadLetter.from_record(record.value, list(record.headers or [])))
            if len(letters) >= wanted:
                break
    finally:
        consumer.close(autocommit=False)
    letters.sort(key=lambda letter: letter.rejected_at)
    return DeadLetterSummary(total, letters[-last:] if last else [])
