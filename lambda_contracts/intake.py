"""The consumer side of the event contract: records in, events and dead letters out.

Every consumer group (the lake sink, the speed workers, the monitor) runs records through
``split`` and publishes the rejects with ``DeadLetterPublisher``. Because validation depends on
the bytes alone, all groups agree on which records are valid.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.events import Event
from lambda_contracts.kafka_clients import new_producer
from lambda_contracts.serde import Rejection, Serde
from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)


class KafkaRecord(Protocol):
    """The fields of a consumed record that intake needs (kafka-python's ConsumerRecord has them)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Accepted:
    partition: int
    offset: int
    event: Event
    raw: bytes


def split(records: Iterable[KafkaRecord], serde: Serde, rejected_by: str) -> tuple[list[Accepted], list[DeadLetter]]:
    """Decode records; valid ones become events, the rest dead letters carrying their bytes."""
    accepted: list[Accepted] = []
    rejected: list[DeadLetter] = []
    now = datetime.now(UTC)
    for record in records:
        decoded = serde.decode(record.value)
        if isinstance(decoded, Rejection):
            rejected.append(
                DeadLetter(
                    original_value=record.value,
                    original_key=record.key,
                    reason=decoded.reason,
                    source_topic=record.topic,
                    source_partition=record.partition,
                    source_offset=record.offset,
                    rejected_by=rejected_by,
                    rejected_at=now,
                )
            )
        else:
            accepted.append(Accepted(record.partition, record.offset, decoded, record.value or b""))
    return accepted, rejected


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

    def publish(self, letters: Iterable[DeadLetter]) -> int:
        count = 0
        for letter in letters:
            future = self._client.send(
                self.topic, key=letter.key, value=letter.original_value, headers=letter.headers()
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

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)
