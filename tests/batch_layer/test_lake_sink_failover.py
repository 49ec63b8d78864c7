"""A lake sink whose dead letters the brokers are slow to acknowledge (a node failing over) waits, not dies."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

import batch_layer.lake_sink
from batch_layer.lake import Lake
from batch_layer.lake_sink import LakeSink
from lambda_contracts.intake import KafkaRecord
from lambda_contracts.settings import Settings
from tests.fakes import FakeRecord
from tests.speed_layer.test_state import valid_records

pytestmark = pytest.mark.unit


class SlowDeadLetters:
    """Times out the first ``late`` flushes, as a producer does while the topic has no leader in sync."""

    def __init__(self, late: int) -> None:
        self.late = late
        self.flushes = 0

    def publish(self, letters: Any) -> int:
        return len(list(letters))

    def flush(self, timeout_s: float | None = None) -> None:
        self.flushes += 1
        if self.flushes <= self.late:
            raise KafkaTimeoutError("Timeout waiting for future")

    def close(self) -> None:
        pass


class PausingConsumer:
    """The consumer calls the sink makes around a flush: which partitions are paused."""

    def __init__(self) -> None:
        self.paused = False

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("events", 0)}

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused = True

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused = False


def late_since(sink: LakeSink) -> float | None:
    """Since when the sink has waited for its dead letters (read through a call: each flush may change it)."""
    return sink._dead_letters_late_since


def test_dead_letters_not_acknowledged_in_time_hold_the_commit_until_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    letters = SlowDeadLetters(late=2)
    monkeypatch.setattr(batch_layer.lake_sink, "DeadLetterPublisher", lambda settings: letters)
    consumer = PausingConsumer()
    settings = Settings(data_dir=tmp_path)
    sink = LakeSink(settings, group_consumer=lambda settings: cast(KafkaConsumer, consumer))
    sink.lake.ensure_table()
    sink._committed[0] = sink._next[0] = 0
    sink._buffer[0] = []
    records = [FakeRecord(r.value, r.offset, topic=settings.events_topic) for r in valid_records(50)]
    sink._take(TopicPartition(settings.events_topic, 0), cast(list[KafkaRecord], records))
    lake = Lake(settings.lake_path, settings.events_topic)

    for _ in range(2):
        sink.flush()  # used to raise KafkaTimeoutError: the process exited and the sink stopped
        assert lake.committed_offsets([0]) == {0: 0}, "no offset is committed before its dead letters are in"
    assert late_since(sink) is not None, "the run loop pauses the consumer meanwhile"
    consumer.pause(*consumer.assignment())

    sink.flush()

    assert lake.committed_offsets([0]) == {0: 50}
    assert sink.stats.rows == 50, "every record once, none lost to the failed flushes"
    assert late_since(sink) is None and not consumer.paused, "taking records again"
