"""The dead-letter record: a rejected record's original bytes plus why and where it came from.

The value is the original value, byte for byte, so a fixed consumer can replay it. The key
names the source record (``topic/partition/offset``), so the same bad record rejected by two
consumer groups is recognisable as one. Metadata travels in headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

Headers = list[tuple[str, bytes]]

REASON = "dlq.reason"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
SOURCE_KEY = "dlq.source.key"
REJECTED_BY = "dlq.rejected.by"
REJECTED_AT = "dlq.rejected.at"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected record, as stored in the dead-letter topic."""

    original_value: bytes | None
    original_key: bytes | None
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    rejected_by: str
    rejected_at: datetime

    @property
    def key(self) -> bytes:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}".encode()

    def headers(self) -> Headers:
        headers = [
            (REASON, self.reason.encode()),
            (SOURCE_TOPIC, self.source_topic.encode()),
            (SOURCE_PARTITION, str(self.source_partition).encode()),
            (SOURCE_OFFSET, str(self.source_offset).encode()),
            (REJECTED_BY, self.rejected_by.encode()),
            (REJECTED_AT, self.rejected_at.isoformat().encode()),
        ]
        if self.original_key is not None:
            headers.append((SOURCE_KEY, self.original_key))
        return headers

    @classmethod
    def from_record(cls, value: bytes | None, headers: Headers) -> DeadLetter:
        """Read a record back from the dead-letter topic."""
        fields = dict(headers)
        missing = [h for h in (REASON, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET) if h not in fields]
        if missing:
            raise ValueError(f"not a dead-letter record: headers {', '.join(missing)} are missing")
        return cls(
            original_value=value,
            original_key=fields.get(SOURCE_KEY),
            reason=fields[REASON].decode(),
            source_topic=fields[SOURCE_TOPIC].decode(),
            source_partition=int(fields[SOURCE_PARTITION]),
            source_offset=int(fields[SOURCE_OFFSET]),
            rejected_by=fields.get(REJECTED_BY, b"unknown").decode(),
            rejected_at=datetime.fromisoformat(fields[REJECTED_AT].decode())
            if REJECTED_AT in fields
            else datetime.fromtimestamp(0, UTC),
        )
