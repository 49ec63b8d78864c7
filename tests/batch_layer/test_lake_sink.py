"""The lake sink is exactly once: SIGKILL at random points and rebalances lose and double nothing."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from kafka import KafkaConsumer
from kafka.errors import RebalanceInProgressError

from batch_layer.lake import Lake
from batch_layer.lake_sink import LakeSink, sink_consumer
from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.serde import JsonSerde, Rejection
from lambda_contracts.settings import Settings
from lambdactl.dead_letters import read_dead_letters
from tests.flows import (
    crash_and_rebalance,
    lively_simulators,
    producing,
    read_topic,
    reaped,
    start_lambdactl,
    wait_for,
    wait_until_lake_complete,
)

pytestmark = pytest.mark.integration


def test_killed_and_rebalanced_sinks_write_every_valid_record_exactly_once(kafka: Settings, tmp_path: Path) -> None:
    settings = kafka.model_copy(
        update={
            "data_dir": tmp_path,
            "lake_flush_seconds": 0.3,
            "lake_flush_rows": 700,
            "consumer_session_timeout_ms": 6000,
            "lake_sink_group": f"sink-{kafka.events_topic}",
        }
    )
    env = settings.child_environment()
    with reaped([]) as children:
        with producing(settings, lively_simulators(seed=21)):
            killed_logs = crash_and_rebalance(
                env,
                tmp_path,
                command="lake-sink",
                ready="took partitions",
                rounds=[1, 2, 1, 2, 1, 2],
                seed=3,
                children=children,
            )
        survivor_log = tmp_path / "survivor.log"
        survivor = start_lambdactl(env, survivor_log, "lake-sink")
        try:
            wait_until_lake_complete(settings)
        finally:
            survivor.terminate()
            assert survivor.wait(timeout=60) == 0, survivor_log.read_text()[-3000:]

    records = read_topic(settings, settings.events_topic)
    valid = {(r.partition, r.offset) for r in records if not isinstance(JsonSerde().decode(r.value), Rejection)}
    table = Lake(settings.lake_path, settings.events_topic).table()
    assert table is not None
    lake = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset", "event_id"])
    coordinates = list(zip(lake["kafka_partition"].to_pylist(), lake["kafka_offset"].to_pylist(), strict=True))
    committed_then_killed = sum(1 for log in killed_logs if "lake version" in log.read_text())
    assert len(killed_logs) == 9
    assert committed_then_killed >= 6, "most sinks were killed in the middle of their work"
    assert len(coordinates) == len(set(coordinates)), "no record twice"
    assert set(coordinates) == valid, "every valid record, and only those"
    assert pc.count_distinct(lake["event_id"]).as_py() < len(coordinates), "redeliveries are kept as records"

    source = {(r.partition, r.offset): r.value for r in records}
    dead = read_topic(settings, settings.dead_letter_topic)
    letters = [DeadLetter.from_record(r.value, list(r.headers)) for r in dead]
    kept = [(letter.source_partition, letter.source_offset) for letter in letters]
    assert sorted(kept) == sorted(source.keys() - valid), "each invalid record kept exactly once, by crashing sinks"
    for letter, record in zip(letters, dead, strict=True):
        assert letter.reason and letter.rejected_by == settings.lake_sink_group
        assert letter.original_value == source[(letter.source_partition, letter.source_offset)], "original bytes"
        assert record.partition == letter.source_partition, "kept in the dead-letter partition of its source"
    summary = read_dead_letters(settings, last=5)
    assert summary.total == len(kept) and len(summary.recent) == 5


def test_a_sink_whose_consumer_stays_out_of_its_group_joins_again_and_loses_nothing(
    kafka: Settings, tmp_path: Path
) -> None:
    """kafka-python once stayed "rebalancing" for minutes, polling on, while the broker listed the group empty.

    That state cannot be provoked on demand, so the first consumer is a real member whose offset
    commits fail as kafka-python's do in it; the sink must replace it and lose and double nothing.
    """
    settings = kafka.model_copy(
        update={"data_dir": tmp_path, "lake_flush_seconds": 0.3, "lake_sink_group": f"sink-{kafka.events_topic}"}
    )
    consumers: list[KafkaConsumer] = []

    def group_consumer(settings: Settings) -> KafkaConsumer:
        consumer = sink_consumer(settings)
        if not consumers:
            consumer.commit = refused_as_while_rebalancing
        consumers.append(consumer)
        return consumer

    def refused_as_while_rebalancing(*_: Any, **__: Any) -> None:
        raise RebalanceInProgressError("the consumer is undergoing a rebalance")

    sink = LakeSink(settings, group_consumer)
    sink.rejoin_after_s = 2.0
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    try:
        with producing(settings, lively_simulators(seed=5, rate=100)):
            wait_for(lambda: sink.stats.rejoins == 1, 60, "the sink replacing the consumer its group refused")
        wait_until_lake_complete(settings)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and len(consumers) == 2

    records = read_topic(settings, settings.events_topic)
    valid = {(r.partition, r.offset) for r in records if not isinstance(JsonSerde().decode(r.value), Rejection)}
    table = Lake(settings.lake_path, settings.events_topic).table()
    assert table is not None
    lake = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
    coordinates = list(zip(lake["kafka_partition"].to_pylist(), lake["kafka_offset"].to_pylist(), strict=True))
    assert len(coordinates) == len(set(coordinates)), "no record twice"
    assert set(coordinates) == valid, "every valid record, and only those"
    with admin_client(settings) as admin:
        mirrored = admin.list_group_offsets(settings.lake_sink_group)[settings.lake_sink_group]
    ends = Lake(settings.lake_path, settings.events_topic).committed_offsets(range(settings.topic_partitions))
    assert {tp.partition: meta.offset for tp, meta in mirrored.items()} == ends, "lag shows again"
