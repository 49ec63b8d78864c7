"""A batching producer for event records, on kafka-python.

Batching (linger, batch size, compression) comes from settings. Delivery failures are counted
and re-raised to the caller on the next ``send`` or on ``flush``, never swallowed. Partitions
are chosen with Kafka's own murmur2 key hash, memoised per key: the same partition the Java
client would pick, without re-hashing a hot key on every record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.partitioner.default import murmur2

from lambda_contracts.plumbing.kafka import new_producer
from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)

PARTITION_CACHE_LIMIT = 200_000
PARTITION_RECHECK_EVERY = 65_536


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge some records; the message says how many and why."""


@dataclass
class DeliveryStats:
    sent: int = 0
    failed: int = 0
    bytes_sent: int = 0


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner assigns to ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class BatchingProducer:
    """Send keyed records to one topic in large compressed batches; use as a context manager."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        on_delivery: Callable[[bytes, int, int], None] | None = None,
        client: KafkaProducer | None = None,
    ) -> None:
        """``on_delivery(key, partition, offset)`` is called for each acknowledged record, if given."""
        self.topic = topic
        self.stats = DeliveryStats()
        self._client = client or new_producer(settings)
        self._on_delivery = on_delivery
        self._lock = threading.Lock()
        self._first_error: BaseException | None = None
        self._partition_of: dict[bytes, int] = {}
        self._partitions = self._partition_count()
        self._closed = False

    def send(
        self,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        delivered: Callable[[int, int], None] | None = None,
    ) -> None:
        """Queue one record; raises ``DeliveryError`` once any earlier record has failed.

        ``delivered(partition, offset)`` is called when this record is acknowledged, if given.
        """
        if self._first_error is not None:
            self._raise_failures()
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += len(value)
        if stats.sent % PARTITION_RECHECK_EVERY == 0:
            self._recheck_partitions()
        partition = self._partition_of.get(key)
        if partition is None:
            partition = self._remember_partition(key)
        future = self._client.send(self.topic, value=value, key=key, partition=partition, headers=headers)
        future.add_errback(self._failed)
        if self._on_delivery is not None:
            future.add_callback(self._delivered, key)
        if delivered is not None:
            future.add_callback(lambda metadata: delivered(metadata.partition, metadata.offset))

    def flush(self, timeout_s: float | None = None) -> DeliveryStats:
        """Wait until every queued record is acknowledged; raises ``DeliveryError`` if any failed."""
        self._client.flush(timeout=timeout_s)
        if self._first_error is not None:
            self._raise_failures()
        return self.stats

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush and close; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.flush(timeout=timeout_s)
        finally:
            self._client.close(timeout=timeout_s)
        if self._first_error is not None:
            self._raise_failures()

    def __enter__(self) -> BatchingProducer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is None:
            self.close()
            return
        try:
            self.close()
        except DeliveryError as delivery_error:
            log.error("%s (while handling %r)", delivery_error, error)

    # -- internals -----------------------------------------------------------------------------

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self.stats.failed += 1
            if self._first_error is None:
                self._first_error = error

    def _delivered(self, key: bytes, metadata: Any) -> None:
        assert self._on_delivery is not None
        self._on_delivery(key, metadata.partition, metadata.offset)

    def _raise_failures(self) -> None:
        raise DeliveryError(
            f"{self.stats.failed} of {self.stats.sent} records to {self.topic} were not acknowledged; "
            f"first error: {self._first_error!r}. Check that the broker is up (`lambdactl broker status`)."
        )

    def _partition_count(self) -> int:
        try:
            partitions = self._client.partitions_for(self.topic)
        except KafkaTimeoutError:
            partitions = None
        if not partitions:
            raise DeliveryError(f"topic {self.topic} does not exist; create it with `lambdactl topics create`")
        return len(partitions)

    def _remember_partition(self, key: bytes) -> int:
        if len(self._partition_of) >= PARTITION_CACHE_LIMIT:
            self._partition_of.clear()
        partition = self._partition_of[key] = kafka_partition(key, self._partitions)
        return partition

    def _recheck_partitions(self) -> None:
        current = self._partition_count()
        if current != self._partitions:
            log.warning("topic %s now has %d partitions (was %d)", self.topic, current, self._partitions)
            self._partitions = current
            self._partition_of.clear()
