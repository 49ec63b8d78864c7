"""Writing dead letters to the dead-letter topic: acknowledged before the offsets that skip them commit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.plumbing.kafka import new_producer
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
