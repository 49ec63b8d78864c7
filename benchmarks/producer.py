"""Producer throughput: the platform's BatchingProducer against a bare kafka-python send loop.

All variants send the same pre-encoded simulator events to a fresh topic in the same run,
in interleaved rounds; the median round of each is reported. Encoding is excluded so that the
figures compare the producers alone; the cost of encoding each wire format (JSON, Avro) and its
bytes per event are measured on their own, and the platform producer also sends the Avro encoding.
"""

from __future__ import annotations

import itertools
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaProducer

from infra.topics import ensure_topics
from lambda_contracts.plumbing.kafka import admin_client, producer_config
from lambda_contracts.serde import WIRE, Rejection, get_serde
from lambda_contracts.settings import Settings
from lambda_contracts.topics import TopicSpec
from sources.producer import BatchingProducer
from sources.run import build_simulators
from sources.simulators import merged_records

TARGET_EVENTS_PER_S = 50_000
TARGET_RATIO = 0.9


@dataclass(frozen=True)
class Variant:
    name: str
    events_per_s: float
    mb_per_s: float


@dataclass(frozen=True)
class Encoding:
    name: str
    events_per_s: float
    bytes_per_event: float


def sample_events(count: int, seed: int = 7, serde: str = "json") -> list[tuple[bytes, bytes]]:
    """Valid commerce events (web and app), about 300 bytes each in JSON (the same events in any format)."""
    simulators = build_simulators(
        ["web", "app"],
        rate=1000.0,
        serde=get_serde(serde),
        start=datetime(2026, 1, 1, tzinfo=UTC),
        seed=seed,
    )
    return [(r.key, r.value) for r in itertools.islice(merged_records(simulators), count)]


def _bare_loop(config: dict[str, object], topic: str, events: list[tuple[bytes, bytes]]) -> float:
    producer = KafkaProducer(**config)
    try:
        started = time.perf_counter()
        for key, value in events:
            producer.send(topic, key=key, value=value)
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


def _platform_producer(settings: Settings, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    producer = BatchingProducer(settings, topic)
    started = time.perf_counter()
    with producer:
        for key, value in events:
            producer.send(key, value)
        producer.flush()
    return time.perf_counter() - started


def measure_encodings(payloads: list[tuple[bytes, bytes]], formats: tuple[str, ...]) -> list[Encoding]:
    """Events/s of each format's encoder on the same events (one core), and its bytes per event."""
    events = [WIRE.decode(value) for _, value in payloads]
    valid = [e for e in events if not isinstance(e, Rejection)]
    results = []
    for name in formats:
        encode = get_serde(name).encode
        started = time.perf_counter()
        size = sum(len(encode(event)) for event in valid)
        results.append(Encoding(name, len(valid) / (time.perf_counter() - started), size / len(valid)))
    return results


def run_producer_benchmark(
    settings: Settings, events: int = 200_000, rounds: int = 3, show: Callable[[str], None] = print
) -> tuple[dict[str, Variant], list[Encoding]]:
    payloads = sample_events(events)
    avro_payloads = sample_events(events, serde="avro-v2")
    size = sum(len(v) for _, v in payloads)
    topic = f"bench.producer.{uuid.uuid4().hex[:8]}"
    with admin_client(settings) as admin:
        ensure_topics(admin, [TopicSpec(topic, settings.topic_partitions, settings.topic_replication_factor)])
    tuned = producer_config(settings)
    defaults = {"bootstrap_servers": tuned["bootstrap_servers"]}
    runs: dict[str, Callable[[], float]] = {
        "bare kafka-python, same settings": lambda: _bare_loop(tuned, topic, payloads),
        "BatchingProducer (platform)": lambda: _platform_producer(settings, topic, payloads),
        "BatchingProducer, Avro v2 records": lambda: _platform_producer(settings, topic, avro_payloads),
        "bare kafka-python, library defaults": lambda: _bare_loop(defaults, topic, payloads),
    }
    show(
        f"{len(payloads):,} events, {size / len(payloads):.0f} bytes on average, {rounds} interleaved rounds; "
        f"compression={settings.producer_compression} linger_ms={settings.producer_linger_ms} "
        f"batch_bytes={settings.producer_batch_bytes} acks={settings.producer_acks}"
    )
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for round_number in range(1, rounds + 1):
        for name, run in runs.items():
            seconds = run()
            timings[name].append(seconds)
            show(f"  round {round_number}: {name:<38} {len(payloads) / seconds:>10,.0f} events/s")
    results = {}
    sizes = {name: size for name in runs} | {"BatchingProducer, Avro v2 records": sum(len(v) for _, v in avro_payloads)}
    for name, rounds_seconds in timings.items():
        median = statistics.median(rounds_seconds)
        results[name] = Variant(name, len(payloads) / median, sizes[name] / 1e6 / median)
    with admin_client(settings) as admin:
        admin.delete_topics([topic], raise_errors=False)
    return results, measure_encodings(payloads, ("json", "avro-v1", "avro-v2"))


def report(measured: tuple[dict[str, Variant], list[Encoding]]) -> list[str]:
    """The lines a person reads: figures, the ratio, and whether the targets are met."""
    results, encodings = measured
    ours = results["BatchingProducer (platform)"]
    bare = results["bare kafka-python, same settings"]
    rate_verdict = "met" if ours.events_per_s >= TARGET_EVENTS_PER_S else "NOT met"
    lines = [f"{v.name:<38} {v.events_per_s:>10,.0f} events/s {v.mb_per_s:>8.1f} MB/s" for v in results.values()]
    lines += [
        f"encode {e.name:<31} {e.events_per_s:>10,.0f} events/s {e.bytes_per_event:>8.1f} bytes/event"
        for e in encodings
    ]
    ratio = ours.events_per_s / bare.events_per_s
    lines.append(f"ratio platform / bare (same settings): {ratio:.2f}")
    lines.append(
        f"target >= {TARGET_EVENTS_PER_S:,} events/s: {rate_verdict}; "
        f"target ratio >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'}"
    )
    return lines
