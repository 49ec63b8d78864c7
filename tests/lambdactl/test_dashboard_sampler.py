"""The dashboard's freshness figure from a fake consumer: ages are measured, never negative."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition

from lambda_contracts.settings import Settings
from lambdactl.dashboard import Sampler
from tests.fakes import FakeRecord

pytestmark = pytest.mark.unit


class _Consumer:
    """Serves each assigned partition's records once, as a real consumer's poll would."""

    def __init__(self, records: dict[int, list[FakeRecord]]) -> None:
        self.records = records

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def seek(self, partition: TopicPartition, offset: int) -> None:
        pass

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[FakeRecord]]:
        served = {TopicPartition("events", p): rs for p, rs in self.records.items()}
        self.records = {}
        return served


def _sampler(tmp_path: Any, records: dict[int, list[FakeRecord]]) -> Sampler:
    sampler = Sampler(Settings(data_dir=tmp_path))
    sampler._consumer = _Consumer(records)
    return sampler


def test_the_oldest_invisible_record_sets_freshness(tmp_path: Any) -> None:
    records = {
        0: [FakeRecord(b"", offset=4, timestamp=90_000), FakeRecord(b"", offset=5, timestamp=95_000)],
        1: [FakeRecord(b"", offset=9, partition=1, timestamp=97_000)],
    }
    age = _sampler(tmp_path, records)._oldest_invisible_age({0: 6, 1: 10, 2: 3}, {0: 4, 1: 9, 2: 3}, now=100.0)
    assert age == pytest.approx(10.0)


def test_a_record_produced_after_the_sample_instant_has_waited_zero_seconds(tmp_path: Any) -> None:
    # End offsets are read after the sample's clock: a record can be stamped later than `now`.
    records = {0: [FakeRecord(b"", offset=4, timestamp=100_020)]}
    assert _sampler(tmp_path, records)._oldest_invisible_age({0: 5}, {0: 4}, now=100.0) == 0.0


def test_nothing_invisible_is_fresh_without_reading_kafka(tmp_path: Any) -> None:
    sampler = Sampler(Settings(data_dir=tmp_path))
    assert sampler._oldest_invisible_age({0: 5, 1: 0}, {0: 5}, now=100.0) == 0.0
    assert sampler._consumer is None
