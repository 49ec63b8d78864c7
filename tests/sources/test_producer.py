"""BatchingProducer with a fake client: failures surface, partitions match Kafka's partitioner."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from sources.knobs import Knobs, SimRecord
from sources.producer import BatchingProducer, DeliveryError, kafka_partition
from sources.run import run_simulation
from sources.simulators import WebClickstream

pytestmark = pytest.mark.unit


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, callback: Any) -> None:
        if self.error is not None:
            callback(self.error)

    def add_callback(self, callback: Any, *args: Any) -> None:
        if self.error is None:
            callback(*args, type("Meta", (), {"partition": 0, "offset": 0})())


class FakeKafkaProducer:
    def __init__(self, partitions: int = 6, fail_after: int | None = None) -> None:
        self.partitions, self.fail_after = partitions, fail_after
        self.sent: list[tuple[bytes, bytes, int]] = []
        self.closed = False

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def send(self, topic: str, value: bytes, key: bytes, partition: int, headers: Any = None) -> FakeFuture:
        self.sent.append((key, value, partition))
        failing = self.fail_after is not None and len(self.sent) > self.fail_after
        return FakeFuture(RuntimeError("NotEnoughReplicas") if failing else None)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


# murmur2 values the Java client's own tests pin (org.apache.kafka.common.utils.UtilsTest).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 6, 7, 64])
def test_partition_is_the_one_the_java_client_picks(partitions: int) -> None:
    for key, java_hash in JAVA_MURMUR2.items():
        assert kafka_partition(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


def test_records_go_to_the_key_partition() -> None:
    client = FakeKafkaProducer(partitions=4)
    with BatchingProducer(Settings(), "events", client=client) as producer:
        for i in range(100):
            producer.send(f"dev-{i % 7}".encode(), b"v")
    assert all(partition == kafka_partition(key, 4) for key, _, partition in client.sent)
    assert client.closed


def test_a_failed_delivery_is_raised_on_the_next_send_and_on_flush() -> None:
    client = FakeKafkaProducer(fail_after=3)
    producer = BatchingProducer(Settings(), "events", client=client)
    for _ in range(4):
        producer.send(b"k", b"v")
    with pytest.raises(DeliveryError, match="1 of 4 records to events were not acknowledged"):
        producer.send(b"k", b"v")
    with pytest.raises(DeliveryError, match="NotEnoughReplicas"):
        producer.flush()


def test_a_missing_topic_is_named() -> None:
    with pytest.raises(DeliveryError, match="topic events does not exist"):
        BatchingProducer(Settings(), "events", client=FakeKafkaProducer(partitions=0))


def test_delivery_callback_reports_each_acknowledged_record() -> None:
    acked: list[bytes] = []
    producer = BatchingProducer(
        Settings(),
        "events",
        client=FakeKafkaProducer(),
        on_delivery=lambda key, partition, offset: acked.append(key),
    )
    producer.send(b"a", b"1")
    producer.send(b"b", b"2")
    producer.close()
    assert acked == [b"a", b"b"]


def simulators() -> list[WebClickstream]:
    return [WebClickstream(Knobs(rate=1000), JsonSerde(), datetime(2026, 1, 1, tzinfo=UTC))]


def test_run_stops_at_count_and_closes_the_producer() -> None:
    client = FakeKafkaProducer()
    producer = BatchingProducer(Settings(), "events", client=client)
    report = run_simulation(simulators(), producer, count=250, realtime=False)
    assert report.records == len(client.sent) == 250
    assert client.closed


def test_run_closes_the_producer_when_interrupted() -> None:
    client = FakeKafkaProducer()
    producer = BatchingProducer(Settings(), "events", client=client)

    def interrupt(record: object) -> None:
        if len(client.sent) == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_simulation(simulators(), producer, count=100, realtime=False, on_record=interrupt)
    assert client.closed and len(client.sent) == 10


def test_run_stops_when_asked() -> None:
    stop = threading.Event()
    client = FakeKafkaProducer()
    producer = BatchingProducer(Settings(), "events", client=client)

    def stop_at_42(record: object) -> None:
        if len(client.sent) == 42:
            stop.set()

    report = run_simulation(simulators(), producer, stop=stop, realtime=False, on_record=stop_at_42)
    assert report.records == 42


def test_realtime_run_respects_duration_in_simulated_time() -> None:
    client = FakeKafkaProducer()
    producer = BatchingProducer(Settings(), "events", client=client)
    report = run_simulation(simulators(), producer, duration_s=0.3, realtime=True)
    assert 200 <= report.records <= 400, "about 1000 records/s for 0.3 s"
    assert report.seconds >= 0.25


class CountingStop(threading.Event):
    """A stop event that counts the pacing waits (never set)."""

    waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_realtime_records_leave_in_ticks_never_before_they_are_due() -> None:
    client = FakeKafkaProducer()
    producer = BatchingProducer(Settings(), "events", client=client)
    stop, started, late = CountingStop(), time.monotonic(), []

    def sent(record: SimRecord) -> None:
        late.append(time.monotonic() - started - record.due)

    report = run_simulation(
        simulators(), producer, duration_s=0.5, realtime=True, send_every_s=0.1, stop=stop, on_record=sent
    )
    assert report.records >= 400, "about 1000 records/s for 0.5 s"
    assert min(late) >= 0, "a record left before its due time"
    assert stop.waits <= 5, f"{stop.waits} waits for {report.records} records: the producer gets them one by one"
