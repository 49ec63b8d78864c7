"""Small fakes for unit tests (integration tests use the real broker instead)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeRecord:
    """A consumed Kafka record with just the fields intake reads."""

    value: bytes | None
    offset: int = 0
    partition: int = 0
    topic: str = "events"
    key: bytes | None = b"k"
    timestamp: int = 0
