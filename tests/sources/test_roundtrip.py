"""Simulated events through the real broker and back: same ids, same bytes, per-key order kept."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from sources.knobs import SimRecord
from sources.producer import BatchingProducer, kafka_partition
from sources.run import run_simulation
from sources.simulators import merged_records
from tests.flows import lively_simulators, read_topic

pytestmark = pytest.mark.integration
COUNT = 6000


def simulators() -> list:  # type: ignore[type-arg]
    return lively_simulators(
        seed=5, start=datetime(2026, 11, 24, 12, tzinfo=UTC), rate=2000.0, duplicate_share=0.02, malformed_share=0.01
    )


def test_every_produced_record_comes_back_exactly(kafka: Settings) -> None:
    sent: list[SimRecord] = []
    producer = BatchingProducer(kafka, kafka.events_topic)
    report = run_simulation(simulators(), producer, count=COUNT, realtime=False, on_record=sent.append)
    assert report.records == COUNT and producer.stats.failed == 0

    expected = list(itertools.islice(merged_records(simulators()), COUNT))
    assert [(r.key, r.value) for r in sent] == [(r.key, r.value) for r in expected], "same seed, same records"

    received = read_topic(kafka, kafka.events_topic)
    assert Counter((r.key, r.value) for r in received) == Counter((r.key, r.value) for r in sent)
    ids_sent = Counter(r.event_id for r in sent if r.kind != "malformed")
    decoded = [JsonSerde().decode(r.value) for r in received]
    ids_received = Counter(str(e.event_id) for e in decoded if hasattr(e, "event_id"))
    assert ids_received == ids_sent

    by_key_sent: dict[bytes, list[bytes]] = defaultdict(list)
    for record in sent:
        by_key_sent[record.key].append(record.value)
    by_key_received: dict[bytes, list[bytes]] = defaultdict(list)
    for record in received:
        assert record.partition == kafka_partition(record.key, kafka.topic_partitions)
        by_key_received[record.key].append(record.value)
    assert by_key_received == by_key_sent, "each entity's records keep their order"
