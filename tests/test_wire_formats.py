"""JSON v1, Avro v1 and Avro v2 records interleaved on one real topic: the lake sink and the speed layer
keep and count exactly what the same events in JSON give (duplicates may arrive in another format)."""

from __future__ import annotations

import random
import threading
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from batch_layer.lake import Lake
from batch_layer.lake_sink import LakeSink
from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import split
from lambda_contracts.serde import JsonSerde, Rejection, get_serde
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEWS
from serving_layer.query import query
from sources.producer import BatchingProducer
from speed_layer.worker import SpeedWorker
from tests.fakes import FakeRecord
from tests.flows import (
    lively_simulators,
    read_topic,
    speed_reflected,
    wait_for,
    wait_until_lake_complete,
    whole_platform_settings,
)
from tests.oracle import first_copies, normalised_rows, speed_rows, view_rows

pytestmark = pytest.mark.integration
FORMATS = ("json", "avro-v1", "avro-v2")


def test_mixed_formats_on_one_topic_give_the_views_of_json(kafka: Settings, tmp_path: Path) -> None:
    settings = whole_platform_settings(kafka, tmp_path)
    simulators = lively_simulators(seed=23, duplicate_share=0.05, malformed_share=0.03, cross_partition_share=0.5)
    rng = random.Random(8)
    json_twin: dict[bytes, bytes] = {}  # each value sent -> the same record in JSON
    with BatchingProducer(settings, settings.events_topic) as producer:
        for simulator in simulators:
            for record in islice(simulator.records(), 1500):
                event = JsonSerde().decode(record.value)
                value = record.value
                if not isinstance(event, Rejection):
                    value = get_serde(rng.choice(FORMATS)).encode(event)
                json_twin[value] = record.value
                producer.send(record.key, value)
    sent = read_topic(settings, settings.events_topic)
    assert {r.value[:1] for r in sent} >= {b"{", b"\x00"}, "both formats on the topic"

    stop = threading.Event()
    threads = [
        threading.Thread(target=worker.run, args=(stop,)) for worker in (LakeSink(settings), SpeedWorker(settings))
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until_lake_complete(settings)
        wait_for(lambda: speed_reflected(settings) == len(sent), 90, f"the speed layer reflecting {len(sent)} records")
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    twins = [_with_value(r, json_twin[r.value]) for r in sent]
    accepted, rejected = split(twins, JsonSerde(), rejected_by="oracle")
    assert rejected and len({str(a.event.event_id) for a in accepted}) < len(accepted), "bad records and duplicates"
    expected_rows = events_to_arrow(accepted).to_pylist()

    lake = Lake(settings.lake_path, settings.events_topic).table()
    assert lake is not None
    lake_rows = lake.to_pyarrow_table().drop_columns(["ingested_at"]).to_pylist()
    key = lambda row: (row["kafka_partition"], row["kafka_offset"])  # noqa: E731
    assert sorted(lake_rows, key=key) == sorted(expected_rows, key=key)

    events = first_copies(expected_rows)
    published = speed_rows(settings)
    for view in VIEWS:
        assert published[view.name] == view_rows(events, view), view.name
        assert normalised_rows(query(settings, f"SELECT * FROM {view.name}")) == view_rows(events, view), view.name


def _with_value(record: Any, value: bytes) -> FakeRecord:
    return FakeRecord(value, record.offset, record.partition, record.topic, record.key)
