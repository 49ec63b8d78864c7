"""The dead-letter record format and the publisher's refusal to hide failures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lambda_contracts.dead_letter import REASON, DeadLetter
from lambda_contracts.intake import split
from lambda_contracts.plumbing.dead_letters import DeadLetterError, DeadLetterPublisher
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from tests.fakes import FakeRecord

pytestmark = pytest.mark.unit


def letter(**changes: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "original_value": b"\xff not json",
        "original_key": b"u-1",
        "reason": "record: not valid JSON",
        "source_topic": "events",
        "source_partition": 3,
        "source_offset": 41,
        "rejected_by": "lake-sink",
        "rejected_at": datetime(2026, 11, 24, 12, tzinfo=UTC),
    }
    fields.update(changes)
    return DeadLetter(**fields)


def test_key_names_the_source_record() -> None:
    assert letter().key == b"events/3/41"


def test_headers_round_trip() -> None:
    original = letter()
    assert DeadLetter.from_record(original.original_value, original.headers()) == original
    keyless = letter(original_key=None)
    assert DeadLetter.from_record(keyless.original_value, keyless.headers()) == keyless


def test_a_record_without_dead_letter_headers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"dlq\.source\.topic"):
        DeadLetter.from_record(b"x", [(REASON, b"why")])


def test_split_keeps_order_and_coordinates() -> None:
    valid = (
        b'{"event_id":"3f0c1a52-8a8e-4a55-9bb1-3c2a1e0f0c11","event_type":"sensor_reading","source":"sensor",'
        b'"event_time":"2026-11-24T16:00:00Z","entity_key":"dev-1","schema_version":1,'
        b'"payload":{"metric":"humidity_pct","value":40.5,"firmware":"fw-1.0"}}'
    )
    accepted, rejected = split(
        [FakeRecord(valid, 10, 1), FakeRecord(b"{}", 11, 1), FakeRecord(valid, 12, 1), FakeRecord(None, 13, 1)],
        JsonSerde(),
        rejected_by="speed",
    )
    assert [a.offset for a in accepted] == [10, 12]
    assert accepted[0].raw == valid
    assert [(r.source_offset, r.original_value, r.rejected_by) for r in rejected] == [
        (11, b"{}", "speed"),
        (13, None, "speed"),
    ]


class FailingFuture:
    def add_errback(self, callback: Any) -> None:
        callback(RuntimeError("broker gone"))


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, int]] = []

    def send(self, topic: str, key: bytes, value: bytes | None, headers: Any, partition: int) -> FailingFuture:
        self.sent.append((topic, value, partition))
        return FailingFuture()

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def test_publisher_raises_when_a_dead_letter_is_not_acknowledged() -> None:
    client = FakeClient()
    publisher = DeadLetterPublisher(Settings(dead_letter_topic="dlq"), client=client)
    assert publisher.publish([letter()]) == 1
    assert client.sent == [("dlq", b"\xff not json", 1)], "source partition 3 maps to dead-letter partition 3 % 2"
    with pytest.raises(DeadLetterError, match="1 dead letters to dlq were not acknowledged"):
        publisher.flush()
