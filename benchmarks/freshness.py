"""Freshness benchmark: produce-to-visible latency, speed throughput, merged-query latency.

1. At a sustained rate (10,000 events/s by default) with a speed worker in its own process,
   marker readings (one device each, every 100 ms) are produced and the merged view is polled
   until each appears: p50 and p99 of produce-to-visible.
2. The speed layer's events/s over a pre-filled topic, next to a bare kafka-python
   consume-and-``json.loads`` loop over the same records, in the same run; then the same events
   in Avro (schema version 2) against a bare consume-and-``fastavro`` loop, with bytes per event.
3. A merged-view query (snapshot resolution included) next to the same query on a single
   pre-merged table: p50 and p99.
"""

from __future__ import annotations

import io
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from fastavro import schemaless_reader
from kafka import TopicPartition

from benchmarks.markers import Acknowledgements, MarkerPoll, MarkerWatcher
from infra.topics import ensure_topics
from lambda_contracts.events import SOURCES, SensorReading, SensorReadingPayload
from lambda_contracts.plumbing import duck
from lambda_contracts.plumbing.kafka import admin_client, new_consumer, topic_offsets
from lambda_contracts.schema_registry import events_catalog
from lambda_contracts.serde import get_serde
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from lambda_contracts.topics import platform_topics
from serving_layer.query import query, serving_connection
from sources.producer import BatchingProducer
from sources.run import build_simulators, run_simulation
from sources.simulators import merged_records
from speed_layer.worker import SpeedWorker

MARKER_EVERY_S = 0.1
MARKER_QUERY = "SELECT device_id FROM sensor_stats_per_minute WHERE device_id LIKE 'bench-%'"
SAMPLE_QUERY = "SELECT page, sum(views) AS views FROM page_views_per_minute GROUP BY page ORDER BY views DESC LIMIT 10"


@dataclass(frozen=True)
class FreshnessFigures:
    rate: float
    achieved_rate: float
    markers: int
    p50_s: float
    p99_s: float
    speed_events_per_s: float
    bare_events_per_s: float
    merged_p50_ms: float
    merged_p99_ms: float
    premerged_p50_ms: float
    premerged_p99_ms: float
    formats: tuple[Throughput, ...]


@dataclass(frozen=True)
class Throughput:
    serde: str
    speed_events_per_s: float
    bare_events_per_s: float
    bytes_per_event: float


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def isolated_settings(settings: Settings, folder: Path) -> Settings:
    """Settings of a fresh topic pair, consumer group and data dir, so a run never meets another's data."""
    suffix = uuid.uuid4().hex[:8]
    isolated = settings.model_copy(
        update={
            "data_dir": folder,
            "events_topic": f"bench.events.{suffix}",
            "dead_letter_topic": f"bench.events.{suffix}.dlq",
            "speed_group": f"bench-speed-{suffix}",
        }
    )
    with admin_client(isolated) as admin:
        ensure_topics(admin, platform_topics(isolated))
    return isolated


def _marker(index: int) -> tuple[bytes, bytes]:
    event = SensorReading(
        event_id=uuid.uuid4(),
        source="sensor",
        event_time=datetime.now(UTC),
        entity_key=f"bench-{index:06d}",
        schema_version=1,
        event_type="sensor_reading",
        payload=SensorReadingPayload(metric="temperature_c", value=Decimal("20.000"), firmware="bench"),
    )
    return event.entity_key.encode(), get_serde("json").encode(event)


class MarkersThroughPythonApi:
    """The markers visible through the Python API (``query``: a snapshot resolved per call)."""

    def __call__(self, settings: Settings) -> Iterable[str]:
        rows = query(settings, MARKER_QUERY)
        return [str(device) for device in rows.column("device_id").to_pylist()]

    def close(self) -> None:
        pass


def measure_freshness(
    settings: Settings,
    rate: float,
    seconds: float,
    show: Callable[[str], None],
    visible_devices: MarkerPoll | None = None,
) -> dict[str, float]:
    """Produce-to-visible of marker readings, seen by ``visible_devices`` (the Python API by default) polled
    from a process of its own."""
    env = settings.child_environment()
    worker = subprocess.Popen([sys.executable, "-m", "lambdactl", "speed"], env=env, stderr=subprocess.DEVNULL)
    sent: dict[str, float] = {}
    acknowledgements = Acknowledgements()
    watcher = MarkerWatcher(visible_devices or MarkersThroughPythonApi(), settings)
    try:
        watcher.start()
        simulators = build_simulators(SOURCES, rate=rate / 3, serde=get_serde("json"), start=datetime.now(UTC), seed=3)
        producer = BatchingProducer(settings, settings.events_topic)
        started = time.monotonic()
        next_marker = started + 2.0  # let the worker join its group first
        counter = itertools.count()

        def on_record(_: object) -> None:
            nonlocal next_marker
            now = time.monotonic()
            if now >= next_marker:
                key, value = _marker(next(counter))
                marker = key.decode()
                sent[marker] = time.monotonic()
                producer.send(key, value, delivered=acknowledgements.of(marker))
                next_marker = now + MARKER_EVERY_S

        report = run_simulation(simulators, producer, duration_s=seconds, realtime=True, on_record=on_record)
        seen, publishes = watcher.finish(sent)
        show(
            f"  produced {report.records:,} records in {report.seconds:.1f}s ({report.rate:,.0f}/s), "
            f"{len(sent)} markers"
        )
    finally:
        watcher.stop()
        worker.terminate()
        worker.wait(timeout=60)
    latencies = [seen[m] - sent[m] for m in sent if m in seen]
    split = acknowledgements.stage_medians(sent, seen, publishes)
    to_ms = {stage: f"{value * 1000:,.0f} ms" for stage, value in split.items()}
    show(
        f"  where a marker's time goes (medians): to the broker's acknowledgement {to_ms['to_broker']}, "
        f"then into a speed publish {to_ms['to_publish']}, then visible {to_ms['to_visible']}"
    )
    return {
        "achieved": report.rate,
        "markers": float(len(latencies)),
        "missing": float(len(sent) - len(latencies)),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        **split,
    }


def _bare_parse(serde: str) -> Callable[[bytes], object]:
    """What a consumer without the platform would do with one record of ``serde``."""
    if serde == "json":
        return json.loads
    schemas = {s.schema_id: s.parsed for s in events_catalog().versions}

    def avro(value: bytes) -> object:
        body = io.BytesIO(value)
        body.seek(5)
        return schemaless_reader(body, schemas[int.from_bytes(value[1:5], "big")], None)

    return avro


def measure_throughput(settings: Settings, events: int, show: Callable[[str], None], serde: str = "json") -> Throughput:
    simulators = build_simulators(SOURCES, rate=1000.0, serde=get_serde(serde), start=datetime.now(UTC), seed=9)
    producer = BatchingProducer(settings, settings.events_topic)
    size = 0
    for record in itertools.islice(merged_records(simulators), events):
        producer.send(record.key, record.value)
        size += len(record.value)
    producer.close()
    show(f"  topic pre-filled with {events:,} events in {serde}, {size / events:.0f} bytes each on average")
    parse = _bare_parse(serde)

    consumer = new_consumer(settings, group_id=None, max_poll_records=20_000)
    tps = [TopicPartition(settings.events_topic, p) for p in range(settings.topic_partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    started, parsed = time.perf_counter(), 0
    while parsed < events:
        for batch in consumer.poll(timeout_ms=500).values():
            for record in batch:
                try:  # noqa: SIM105 (a with-block per record would slow the baseline down)
                    parse(record.value)
                except (ValueError, KeyError, EOFError, IndexError):
                    pass  # a malformed record (the simulators send some): parsed all the same
                parsed += 1
    bare = events / (time.perf_counter() - started)
    ends = {p: 0 for p in range(settings.topic_partitions)} | topic_offsets(consumer, settings.events_topic)
    consumer.close(autocommit=False)

    stop = threading.Event()
    worker = SpeedWorker(settings)
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    while True:  # the published snapshots are the signal (duplicates and malformed records count nothing)
        snapshots = [read_snapshot(settings.speed_views_path, p) for p in ends]
        if all(s is not None and s.next_offset >= ends[s.partition] for s in snapshots if s) and all(snapshots):
            break
        time.sleep(0.02)
    assert worker.first_assignment_at is not None
    speed = events / (time.monotonic() - worker.first_assignment_at)  # the group join is start-up, not throughput
    stop.set()
    thread.join()
    show(f"  {serde}: speed layer {speed:,.0f} events/s, bare loop {bare:,.0f} events/s")
    return Throughput(serde, speed, bare, size / events)


def measure_queries(settings: Settings, runs: int = 50) -> tuple[list[float], list[float]]:
    merged = []
    for _ in range(runs):
        started = time.perf_counter()
        query(settings, SAMPLE_QUERY)
        merged.append((time.perf_counter() - started) * 1000)
    connection = serving_connection(settings)
    premerged_connection = duck.connect()
    premerged_connection.register("source", connection.sql("SELECT * FROM page_views_per_minute").to_arrow_table())
    premerged_connection.execute("CREATE TABLE page_views_per_minute AS SELECT * FROM source")
    premerged = []
    for _ in range(runs):
        started = time.perf_counter()
        premerged_connection.sql(SAMPLE_QUERY).fetchall()
        premerged.append((time.perf_counter() - started) * 1000)
    return merged, premerged


def run_freshness_benchmark(
    settings: Settings,
    rate: float = 10_000,
    seconds: float = 30,
    events: int = 500_000,
    show: Callable[[str], None] = print,
) -> FreshnessFigures:
    with tempfile.TemporaryDirectory(prefix="freshness-") as folder:
        show(f"1. produce-to-visible at {rate:,.0f} events/s for {seconds:.0f}s (speed worker in its own process)")
        fresh = measure_freshness(isolated_settings(settings, Path(folder) / "fresh"), rate, seconds, show)
        show(f"2. speed layer throughput against a bare consume-and-parse loop, {events:,} events")
        throughput_settings = isolated_settings(settings, Path(folder) / "throughput")
        formats = [measure_throughput(throughput_settings, events, show)]
        avro_settings = isolated_settings(settings, Path(folder) / "throughput-avro")
        formats.append(measure_throughput(avro_settings, events, show, serde="avro-v2"))
        show("3. merged-view query against the same query on a pre-merged table")
        merged, premerged = measure_queries(throughput_settings)
    return FreshnessFigures(
        rate=rate,
        achieved_rate=fresh["achieved"],
        markers=int(fresh["markers"]),
        p50_s=fresh["p50"],
        p99_s=fresh["p99"],
        speed_events_per_s=formats[0].speed_events_per_s,
        bare_events_per_s=formats[0].bare_events_per_s,
        merged_p50_ms=statistics.median(merged),
        merged_p99_ms=percentile(merged, 0.99),
        premerged_p50_ms=statistics.median(premerged),
        premerged_p99_ms=percentile(premerged, 0.99),
        formats=tuple(formats),
    )


def report(f: FreshnessFigures) -> list[str]:
    return [
        f"produce-to-visible at {f.achieved_rate:,.0f} events/s ({f.markers} markers): "
        f"p50 {f.p50_s * 1000:,.0f} ms, p99 {f.p99_s * 1000:,.0f} ms (target p99 <= 1000 ms: "
        f"{'met' if f.p99_s <= 1 else 'NOT met'})",
        f"speed layer {f.speed_events_per_s:,.0f} events/s, "
        f"bare consume+json.loads {f.bare_events_per_s:,.0f} events/s,"
        f" ratio {f.speed_events_per_s / f.bare_events_per_s:.2f} (target >= 0.8: "
        f"{'met' if f.speed_events_per_s / f.bare_events_per_s >= 0.8 else 'NOT met'})",
        *(
            f"format {t.serde:<8} speed layer {t.speed_events_per_s:>8,.0f} events/s, bare consume+parse "
            f"{t.bare_events_per_s:>8,.0f} events/s, {t.bytes_per_event:.0f} bytes/event"
            for t in f.formats
        ),
        f"merged-view query p50 {f.merged_p50_ms:.1f} ms p99 {f.merged_p99_ms:.1f} ms; pre-merged table "
        f"p50 {f.premerged_p50_ms:.1f} ms p99 {f.premerged_p99_ms:.1f} ms",
    ]
