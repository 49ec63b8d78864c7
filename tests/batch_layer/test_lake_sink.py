"""The lake sink is exactly once: SIGKILL at random points and rebalances lose and double nothing."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from kafka import TopicPartition

from batch_layer.lake import Lake
from lambda_contracts.kafka_clients import new_consumer
from lambda_contracts.serde import JsonSerde, Rejection
from lambda_contracts.settings import Settings
from tests.flows import lively_simulators, producing, reaped, start_lambdactl, wait_for
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = new_consumer(settings, group_id=None)
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.topic_partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close(autocommit=False)


def wait_until_lake_complete(settings: Settings, timeout_s: float = 90) -> None:
    """Poll the lake's committed offsets (the real signal) until they reach the topic's end."""
    lake, ends = Lake(settings.lake_path, settings.events_topic), end_offsets(settings)
    wait_for(lambda: lake.committed_offsets(ends) == ends, timeout_s, f"the lake reaching offsets {ends}")


def wait_for_line(log: Path, text: str, count: int = 1, timeout_s: float = 60) -> None:
    """Poll a sink's own log for a line it writes when it reaches a state (a real signal)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(text) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{log.name} never said {text!r} {count} times:\n{log.read_text()[-2000:]}")


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
    rng = random.Random(3)
    killed_logs: list[Path] = []
    with reaped([]) as children:
        with producing(settings, lively_simulators(seed=21)):
            for round_number in range(6):
                logs = [tmp_path / f"sink-{round_number}-{i}.log" for i in range(2 if round_number % 2 else 1)]
                sinks = [start_lambdactl(env, log, "lake-sink") for log in logs]
                children.extend(sinks)
                for log in logs:
                    wait_for_line(log, "took partitions")
                for index, (sink, log) in enumerate(zip(sinks, logs, strict=True)):
                    if index:  # the survivor of a rebalance takes over the dead member's partitions
                        wait_for_line(log, "took partitions", count=2)
                    time.sleep(rng.uniform(0.2, 1.5))  # a random instant to crash at, not a wait for readiness
                    sink.kill()
                    sink.wait()
                    killed_logs.append(log)
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
