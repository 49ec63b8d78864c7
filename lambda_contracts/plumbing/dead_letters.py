"""Writing dead letters: acknowledged before the offsets that skip them commit, and each bad record once.

One consumer writes dead letters (the lake sink); the others only count what they reject. A bad
record of source partition ``p`` goes to dead-letter partition ``p`` (modulo its partition count),
so a writer that takes ``p`` over can read that partition's tail and skip the records already
kept there (``last_dead_lettered``) instead of writing them again after a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from kafka import TopicPartition

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.plumbing.kafka import new_consumer, new_producer
from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)


class DeadLetterError(RuntimeError):
    """Dead letters could not be written; the consumer must not commit past them."""


class DeadLetterPublisher:
    """Writes dead letters to the dead-letter topic; ``flush`` raises if any was not acknowledged."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.topic = settings.dead_letter_topic
        self.published = 0
        self._client = client or new_producer(settings)
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._partitions = 0

    def publish(self, letters: Iterable[DeadLetter]) -> int:
        count = 0
        for letter in letters:
            future = self._client.send(
                self.topic,
                key=letter.key,
                value=letter.original_value,
                headers=letter.headers(),
                partition=letter.source_partition % self._partition_count(),
            )
            future.add_errback(self._failed)
            log.debug(
                "rejected record %s/%d/%d: %s",
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.reason,
            )
            count += 1
        self.published += count
        return count

    def flush(self, timeout_s: float | None = 30.0) -> None:
        self._client.flush(timeout=timeout_s)
        with self._lock:
            if self._errors:
                raise DeadLetterError(
                    f"{len(self._errors)} dead letters to {self.topic} were not acknowledged: {self._errors[0]!r}"
                )

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._client.close()

    def _partition_count(self) -> int:
        if not self._partitions:
            self._partitions = len(self._client.partitions_for(self.topic))
        return self._partitions

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)


def last_dead_lettered(settings: Settings, partitions: Iterable[int], timeout_s: float = 10.0) -> dict[int, int]:
    """Source partition -> the highest offset of the events topic already in the dead-letter topic.

    Read from the tail of the dead-letter partition each source partition maps to; partitions with
    no dead letter near that tail are absent.
    """
    wanted = set(partitions)
    if not wanted:
        return {}
    consumer = new_consumer(settings, group_id=None, consumer_timeout_ms=int(timeout_s * 1000))
    try:
        count = len(consumer.partitions_for_topic(settings.dead_letter_topic) or ())
        if not count:
            return {}
        found: dict[int, int] = {}
        for dlq_partition in sorted({p % count for p in wanted}):
            sources = {p for p in wanted if p % count == dlq_partition}
            tp = TopicPartition(settings.dead_letter_topic, dlq_partition)
            found.update(_scan_tail(consumer, settings, tp, sources, time.monotonic() + timeout_s))
        return found
    finally:
        consumer.close(autocommit=False)


TAIL_STEP = 200
TAIL_LIMIT = 20_000
"""How far back a tail is read: a dead-letter partition holds its own source partition's letters (when
both topics have as many partitions, as the platform creates them), so the last one is at the end."""


def _scan_tail(
    consumer: Any, settings: Settings, tp: TopicPartition, sources: set[int], deadline: float
) -> dict[int, int]:
    """Walk back from the end of one dead-letter partition until every source partition is found."""
    consumer.assign([tp])
    begin, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
    found: dict[int, int] = {}
    high = end
    while high > max(begin, end - TAIL_LIMIT) and sources - set(found):
        low = max(begin, high - TAIL_STEP)
        consumer.seek(tp, low)
        while consumer.position(tp) < high:
            if time.monotonic() > deadline:
                raise DeadLetterError(f"could not read the tail of {tp.topic}[{tp.partition}] in time")
            for record in consumer.poll(timeout_ms=1000).get(tp, []):
                if record.offset >= high:
                    continue
                letter = DeadLetter.from_record(record.value, list(record.headers or []))
                if letter.source_topic == settings.events_topic and letter.source_partition in sources:
                    found[letter.source_partition] = max(found.get(letter.source_partition, -1), letter.source_offset)
        high = low
    return found
