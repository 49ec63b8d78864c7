"""Batch benchmark: the Spark recompute of one day of events against DuckDB over the same files.

A day of simulated events (web, app, sensors; duplicates included) is written to a fresh lake.
Spark runs the batch job's compute for that day (read Delta, keep records below the cutoff,
deduplicate, three views, write Parquet); DuckDB runs the same SQL over the lake's Parquet files
and writes Parquet too. Spark's session start-up is timed separately.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deltalake import DeltaTable

from batch_layer.compute import recompute
from batch_layer.lake import Lake
from batch_layer.plan import Plan
from batch_layer.spark import spark_session
from lambda_contracts.columns import events_to_arrow, with_ingest_time
from lambda_contracts.events import SOURCES
from lambda_contracts.intake import Accepted
from lambda_contracts.manifest import EMPTY
from lambda_contracts.plumbing import duck
from lambda_contracts.serde import JsonSerde, Rejection
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEWS, deduplicated_sql
from sources.run import build_simulators
from sources.simulators import merged_records

DAY = datetime(2026, 11, 24, tzinfo=UTC)
SECONDS_PER_DAY = 86_400
CHUNK = 100_000


@dataclass(frozen=True)
class BatchFigures:
    events: int
    lake_mb: float
    spark_startup_s: float
    spark_s: float
    duckdb_s: float


def build_day_lake(settings: Settings, events: int, show: Callable[[str], None]) -> dict[int, int]:
    """Write ``events`` records spread over one day into a fresh lake; returns its offsets."""
    serde = JsonSerde()
    simulators = build_simulators(
        SOURCES,
        rate=events / SECONDS_PER_DAY / 3,
        serde=serde,
        start=DAY,
        seed=11,
        duplicate_share=0.01,
        late_share=0.05,
    )
    lake = Lake(settings.lake_path, settings.events_topic)
    offsets = dict.fromkeys(range(settings.topic_partitions), 0)
    records = itertools.islice(merged_records(simulators), events)
    written = 0
    while chunk := list(itertools.islice(records, CHUNK)):
        accepted = []
        for record in chunk:
            partition = written % settings.topic_partitions
            event = serde.decode(record.value)
            assert not isinstance(event, Rejection)
            accepted.append(Accepted(partition, offsets[partition], event, record.value))
            offsets[partition] += 1
            written += 1
        rows = with_ingest_time(events_to_arrow(accepted), datetime.now(UTC))
        before = {p: o - sum(1 for a in accepted if a.partition == p) for p, o in offsets.items()}
        lake.append(rows, expected=before, next_offsets=dict(offsets))
        show(f"  lake: {written:,} / {events:,} events written")
    return offsets


def run_batch_benchmark(settings: Settings, events: int, show: Callable[[str], None] = print) -> BatchFigures:
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as folder:
        settings = settings.model_copy(update={"data_dir": Path(folder)})
        offsets = build_day_lake(settings, events, show)
        table = DeltaTable(str(settings.lake_path))
        files = table.file_uris()
        lake_mb = sum(Path(f).stat().st_size for f in files) / 1e6
        days = sorted({str(v["event_date"]) for v in table.partitions()})
        plan = Plan("bench", 0, 1, table.version(), offsets, "benchmark", "recompute", days=days)

        started = time.perf_counter()
        spark = spark_session(settings, app_name="batch-benchmark")
        spark_startup = time.perf_counter() - started
        recompute(spark, settings, plan, EMPTY)  # warm-up: JIT, file listing caches
        started = time.perf_counter()
        recompute(spark, settings, plan, EMPTY)
        spark_seconds = time.perf_counter() - started

        connection = duck.connect()
        started = time.perf_counter()
        connection.execute(f"CREATE TEMP VIEW lake AS SELECT * FROM read_parquet({files!r}, hive_partitioning = true)")
        connection.execute(f"CREATE TEMP TABLE batch_events AS {deduplicated_sql('lake')}")
        for view in VIEWS:
            target = Path(folder) / "duckdb" / f"{view.name}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            connection.execute(f"COPY ({view.aggregate_sql('batch_events')}) TO '{target}' (FORMAT parquet)")
        duckdb_seconds = time.perf_counter() - started
        return BatchFigures(events, lake_mb, spark_startup, spark_seconds, duckdb_seconds)


def report(figures: BatchFigures) -> list[str]:
    spark_rate, duckdb_rate = figures.events / figures.spark_s, figures.events / figures.duckdb_s
    return [
        f"{figures.events:,} events over one day, lake {figures.lake_mb:.1f} MB of Parquet (Delta)",
        f"Spark session start-up            {figures.spark_startup_s:8.1f} s (once per task)",
        f"Spark recompute of the day        {figures.spark_s:8.1f} s  ({spark_rate:,.0f} events/s)",
        f"DuckDB, same SQL, same files      {figures.duckdb_s:8.1f} s  ({duckdb_rate:,.0f} events/s)",
        f"ratio Spark / DuckDB: {figures.spark_s / figures.duckdb_s:.1f}x the time",
    ]
