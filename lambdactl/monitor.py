"""A validating monitor: consumes the events topic, dead-letters bad records, shows live rates.

It is its own consumer group, so it never takes records away from the lake sink or the speed
layer. Offsets are committed only after the dead letters of the same records are acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition

from lambda_contracts.events import SOURCES
from lambda_contracts.intake import split
from lambda_contracts.plumbing.kafka import new_consumer, subscribe_when_known
from lambda_contracts.serde import WIRE
from lambda_contracts.settings import Settings

MONITOR_GROUP = "lambda-monitor"
LATE_AFTER_MS = 3_600_000


@dataclass
class MonitorTotals:
    accepted: int = 0
    rejected: int = 0
    late: int = 0
    by_source: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class MonitorTick:
    """What one progress line shows."""

    seconds: float
    rate: float
    lag: int
    totals: MonitorTotals

    def describe(self) -> str:
        totals = self.totals
        sources = " ".join(f"{s} {totals.by_source[s]:,}" for s in SOURCES)
        return (
            f"{datetime.now(UTC):%H:%M:%S} in {self.rate:,.0f} ev/s | valid {totals.accepted:,} ({sources})"
            f" | late>1h {totals.late:,} | rejected {totals.rejected:,} | lag {self.lag:,}"
        )


def run_monitor(
    settings: Settings,
    stop: threading.Event,
    show: Callable[[MonitorTick], None],
    group_id: str = MONITOR_GROUP,
    every_s: float = 1.0,
) -> MonitorTotals:
    """Consume until ``stop`` is set, calling ``show`` about every ``every_s`` seconds."""
    consumer = new_consumer(settings, group_id)
    subscribe_when_known(consumer, settings.events_topic)
    totals = MonitorTotals()
    window_start, window_count = time.monotonic(), 0
    try:
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=200, max_records=5000)
            records = [r for batch in batches.values() for r in batch]
            if records:
                accepted, rejected = split(records, WIRE, rejected_by=group_id)
                consumer.commit()
                totals.accepted += len(accepted)
                totals.rejected += len(rejected)
                window_count += len(records)
                appended_at = {(r.partition, r.offset): r.timestamp for r in records}
                for item in accepted:
                    totals.by_source[item.event.source] += 1
                    delivered_ms = appended_at[(item.partition, item.offset)]
                    if delivered_ms - item.event.event_time.timestamp() * 1000 > LATE_AFTER_MS:
                        totals.late += 1
            now = time.monotonic()
            if now - window_start >= every_s:
                show(MonitorTick(now - window_start, window_count / (now - window_start), _lag(consumer), totals))
                window_start, window_count = now, 0
    finally:
        consumer.close(autocommit=False)
    return totals


def _lag(consumer: KafkaConsumer) -> int:
    """Records on the assigned partitions that this group has not consumed yet."""
    assigned: set[TopicPartition] = consumer.assignment()
    if not assigned:
        return 0
    ends = consumer.end_offsets(list(assigned))
    return sum(max(0, ends[tp] - consumer.position(tp)) for tp in assigned)
