"""The consumer side of the event contract: records in, events and dead letters out.

Every consumer (the lake sink, the speed workers, the monitor, a replay) decides validity with
``split`` (or its vectorized twin in ``plumbing.micro_batch``). Because validation depends on the
bytes alone, all consumers agree on which records are valid; only the lake sink writes the
rejects to the dead-letter topic, so each bad record is kept once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.events import Event
from lambda_contracts.serde import Decoder, Rejection


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


def split(records: Iterable[KafkaRecord], serde: Decoder, rejected_by: str) -> tuple[list[Accepted], list[DeadLetter]]:
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
