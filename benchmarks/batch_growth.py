"""Batch growth benchmark: does a run cost what its new events cost, or what history holds?

Two lakes cover the same event days; the large one holds ten times the events of the small one.
Each gets the same batch of new events (the simulators' mix: late events up to two hours, a share
of redeliveries) and the batch views advance over it:

- **advance (Spark)**: the batch layer's incremental run (``batch_layer.compute.advance``), timed on
  both lakes; ``growth_ratio`` is large / small (the target is at most 1.3);
- **advance (DuckDB)**: the same steps and the same SQL (view declarations, first-copy rule) in
  DuckDB over the same files, for ``spark_vs_duckdb`` on the large lake (target at most 3);
- **day recompute (before)**: what a run cost before this layer was incremental: every touched
  event day recomputed from all its lake events, timed on both lakes for contrast.

Spark's session start-up is reported apart (a long-lived session pays it once). Each timing is the
best of ``--repeats`` runs, so JIT warm-up does not decide the figure.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from batch_layer.batch_job import run_batch
from batch_layer.compute import advance, range_condition, recompute
from batch_layer.lake import Lake
from batch_layer.plan import Plan, make_plan
from batch_layer.spark import spark_session
from lambda_contracts.columns import LAKE_SCHEMA, with_ingest_time
from lambda_contracts.manifest import Manifest, read_current
from lambda_contracts.plumbing import duck
from lambda_contracts.plumbing.micro_batch import decode_micro_batch
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEWS, deduplicated_sql
from sources.run import build_simulators
from sources.simulators import merged_records

END = datetime(2026, 11, 24, 18, tzinfo=UTC)
"""History ends here; the new events arrive from here on (their late ones reach back two hours)."""
CHUNK = 200_000
DUCK_PERIOD = "strftime(date_trunc('hour', event_time), '%Y-%m-%dT%H')"


@dataclass(frozen=True)
class LakeFigures:
    events: int
    spark_s: float
    duckdb_s: float
    recompute_s: float
    counted: int
    periods: int


@dataclass(frozen=True)
class GrowthFigures:
    small: LakeFigures
    large: LakeFigures
    new_events: int
    days: int
    spark_startup_s: float

    @property
    def growth_ratio(self) -> float:
        return self.large.spark_s / self.small.spark_s

    @property
    def spark_vs_duckdb(self) -> float:
        return self.large.spark_s / self.large.duckdb_s


def synthetic_history(settings: Settings, events: int, days: int, seed: int) -> dict[int, int]:
    """``events`` valid events spread evenly over ``days`` before ``END``, written to a fresh lake."""
    lake = Lake(settings.lake_path, settings.events_topic)
    offsets = dict.fromkeys(range(settings.topic_partitions), 0)
    connection = duck.connect()
    connection.execute(f"SELECT setseed({(seed % 1000) / 1000})").fetchall()
    start = END - timedelta(days=days)
    for first in range(0, events, CHUNK):
        count = min(CHUNK, events - first)
        parameters = {"n": count, "start": start, "span": days * 86_400_000_000, "parts": settings.topic_partitions}
        rows = connection.sql(_HISTORY_SQL, params=parameters).to_arrow_table()
        by_partition = []
        for partition in range(settings.topic_partitions):
            part = rows.filter(pc.equal(rows.column("kafka_partition"), partition))
            numbered = pa.array(range(offsets[partition], offsets[partition] + part.num_rows), pa.int64())
            by_partition.append(part.set_column(part.schema.get_field_index("kafka_offset"), "kafka_offset", numbered))
        table = pa.concat_tables(by_partition).cast(LAKE_SCHEMA.remove(LAKE_SCHEMA.get_field_index("ingested_at")))
        before = dict(offsets)
        for part in by_partition:
            if part.num_rows:
                partition = part.column("kafka_partition")[0].as_py()
                offsets[partition] += part.num_rows
        lake.append(with_ingest_time(table, datetime.now(UTC)), before, dict(offsets))
    return offsets


_HISTORY_SQL = """
WITH base AS (
    SELECT range AS i, random() AS r, $start::TIMESTAMPTZ + to_microseconds((random() * $span)::BIGINT) AS t
    FROM range($n)
)
SELECT
    uuid()::VARCHAR AS event_id,
    CASE WHEN r < 0.45 THEN 'page_view' WHEN r < 0.5 THEN 'purchase' WHEN r < 0.55 THEN 'add_to_cart'
         ELSE 'sensor_reading' END AS event_type,
    CASE WHEN r < 0.55 THEN (CASE WHEN i % 2 = 0 THEN 'web' ELSE 'app' END) ELSE 'sensor' END AS source,
    t AS event_time, t::DATE AS event_date,
    CASE WHEN r < 0.55 THEN 'user-' || (i % 5000) ELSE 'device-' || (i % 2000) END AS entity_key,
    1 AS schema_version,
    CASE WHEN r < 0.45 THEN '/page/' || (i % 50) END AS page,
    NULL::VARCHAR AS referrer,
    CASE WHEN r < 0.55 THEN 's-' || (i % 9000) END AS session_id,
    CASE WHEN r < 0.45 THEN (i % 60000)::BIGINT END AS duration_ms,
    CASE WHEN r >= 0.45 AND r < 0.55 THEN 'product-' || (i % 300) END AS product_id,
    CASE WHEN r >= 0.45 AND r < 0.55 THEN (1 + i % 4)::INTEGER END AS quantity,
    CASE WHEN r >= 0.5 AND r < 0.55 THEN ((i % 9000) / 100)::DECIMAL(12, 2) END AS unit_price,
    CASE WHEN r >= 0.45 AND r < 0.5 THEN 'order-' || i END AS order_id,
    CASE WHEN r >= 0.45 AND r < 0.5 THEN ((i % 20000) / 100)::DECIMAL(12, 2) END AS amount,
    CASE WHEN r >= 0.45 AND r < 0.5 THEN 'EUR' END AS currency,
    CASE WHEN r >= 0.55 THEN ['temperature_c', 'humidity_pct', 'pressure_hpa', 'vibration_mm_s'][1 + i % 4] END
        AS metric,
    CASE WHEN r >= 0.55 THEN ((i % 100000) / 1000)::DECIMAL(15, 3) END AS value,
    CASE WHEN r >= 0.55 THEN 'fw-1.0' END AS firmware,
    (i % $parts)::INTEGER AS kafka_partition,
    0::BIGINT AS kafka_offset
FROM base
"""


def append_new_events(settings: Settings, offsets: dict[int, int], count: int) -> dict[int, int]:
    """The same ``count`` simulator records for every lake: late events up to 2 h, 1 % redeliveries."""
    serde = JsonSerde()
    simulators = build_simulators(serde=serde, start=END, seed=5, duplicate_share=0.01, malformed_share=0.0)
    records = list(itertools.islice(merged_records(simulators), count))
    placed = []
    after = dict(offsets)
    for record in records:
        partition = zlib.crc32(record.key) % settings.topic_partitions  # copies land with their original
        placed.append(_Record(record.value, after[partition], partition, record.key))
        after[partition] += 1
    rows, rejected = decode_micro_batch(placed, serde, rejected_by="benchmark")
    assert not rejected
    Lake(settings.lake_path, settings.events_topic).append(with_ingest_time(rows, datetime.now(UTC)), offsets, after)
    return after


@dataclass
class _Record:
    """A record as a consumer sees it (``intake.KafkaRecord``)."""

    value: bytes | None
    offset: int
    partition: int
    key: bytes | None
    topic: str = "events"


def duckdb_advance(settings: Settings, plan: Plan, base: Manifest, folder: Path) -> int:
    """The advance's steps in DuckDB: same files, same first-copy SQL, same view SQL; returns events counted."""
    lake = Lake(settings.lake_path, settings.events_topic)
    files = lake.files_with_offsets(DeltaTable(str(settings.lake_path), version=plan.lake_version), plan.new_ranges)
    connection = duck.connect()
    connection.execute(f"CREATE TEMP VIEW lake AS SELECT * FROM read_parquet({files!r}, hive_partitioning = true)")
    connection.execute(f"CREATE TEMP VIEW delta AS SELECT * FROM lake WHERE {range_condition(plan.new_ranges)}")
    connection.execute(
        f"CREATE TEMP TABLE new_events AS SELECT *, {DUCK_PERIOD} AS period FROM ({deduplicated_sql('delta')})"
    )
    periods = [row[0] for row in connection.execute("SELECT DISTINCT period FROM new_events").fetchall()]
    root = settings.batch_views_path
    counted_before = [str(root / f) for f in base.id_files(periods)]
    if counted_before:
        connection.execute(
            f"DELETE FROM new_events WHERE event_id IN (SELECT event_id FROM read_parquet({counted_before!r}))"
        )
    target = folder / uuid.uuid4().hex[:8]
    target.mkdir(parents=True)
    connection.execute(
        f"COPY (SELECT period, event_id FROM new_events) TO '{target}/ids' (FORMAT parquet, PARTITION_BY (period))"
    )
    for view in VIEWS:
        partial = view.aggregate_sql("new_events", by=("period",))
        old = [str(root / f) for p in periods for f in base.segments.get(view.name, {}).get(p, [])]
        if old:
            columns = ", ".join(("period", *view.key_columns, *view.measure_columns))
            partial = f"SELECT {columns} FROM read_parquet({old!r}) UNION ALL {partial}"
        merged = view.merge_sql(f"({partial}) AS parts", by=("period",))
        connection.execute(f"COPY ({merged}) TO '{target}/{view.name}' (FORMAT parquet, PARTITION_BY (period))")
    counted = connection.execute("SELECT count(*) FROM new_events").fetchone()
    return int(counted[0]) if counted else 0


def best_of(repeats: int, run: Callable[[], object]) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def measure_lake(
    spark_factory: Callable[[], object],
    settings: Settings,
    *,
    history: int,
    days: int,
    new_events: int,
    repeats: int,
    show: Callable[[str], None],
) -> LakeFigures:
    spark = spark_factory()
    show(f"  writing {history:,} events of history over {days} days ...")
    offsets = synthetic_history(settings, history, days, seed=history)
    run_batch(settings, "history", lambda: spark)  # type: ignore[arg-type,return-value]
    append_new_events(settings, offsets, new_events)
    base = read_current(settings.batch_views_path)
    plan = make_plan(settings, "new")
    show(f"  advancing over {new_events:,} new events (best of {repeats}) ...")
    updates = []
    spark_s = best_of(repeats, lambda: updates.append(advance(spark, settings, plan, base)))  # type: ignore[arg-type]
    scratch = settings.data_dir / "duckdb"
    counts = []
    duck_s = best_of(repeats, lambda: counts.append(duckdb_advance(settings, plan, base, scratch)))
    assert counts[-1] == updates[-1].counted, "Spark and DuckDB counted the same new events"
    days_touched = sorted({p[:10] for p in updates[-1].replaced})
    recompute_plan = replace(plan, mode="recompute", days=days_touched, previous={})
    show(f"  day recompute of {', '.join(days_touched)} (the cost before this change) ...")
    recompute_s = best_of(repeats, lambda: recompute(spark, settings, recompute_plan, base))  # type: ignore[arg-type]
    return LakeFigures(history, spark_s, duck_s, recompute_s, updates[-1].counted, len(updates[-1].replaced))


def run_growth_benchmark(
    settings: Settings,
    *,
    history: int = 200_000,
    days: int = 2,
    new_events: int = 100_000,
    repeats: int = 2,
    show: Callable[[str], None] = print,
) -> GrowthFigures:
    started = time.perf_counter()
    spark = spark_session(settings.model_copy(update={"spark_shuffle_partitions": 2}), app_name="batch-growth")
    startup = time.perf_counter() - started
    figures = []
    with tempfile.TemporaryDirectory(prefix="batch-growth-") as folder:
        for name, events in (("small", history), ("large", history * 10)):
            show(f"{name} lake:")
            lake_settings = settings.model_copy(update={"data_dir": Path(folder) / name})
            figures.append(
                measure_lake(
                    lambda: spark,
                    lake_settings,
                    history=events,
                    days=days,
                    new_events=new_events,
                    repeats=repeats,
                    show=show,
                )
            )
    return GrowthFigures(figures[0], figures[1], new_events, days, startup)


def report(f: GrowthFigures) -> list[str]:
    small, large = f.small, f.large
    return [
        f"history: {small.events:,} events (small lake) and {large.events:,} (large) over the same {f.days} days; "
        f"the same {f.new_events:,} new events land on each ({large.counted:,} counted once, {large.periods} hour "
        "periods touched)",
        f"Spark session start-up {f.spark_startup_s:.1f} s (once per process)",
        f"advance, Spark (incremental)      small {small.spark_s:6.2f} s   large {large.spark_s:6.2f} s   "
        f"ratio {large.spark_s / small.spark_s:.2f}",
        f"advance, DuckDB (same SQL)        small {small.duckdb_s:6.2f} s   large {large.duckdb_s:6.2f} s",
        f"day recompute, Spark (before)     small {small.recompute_s:6.2f} s   large {large.recompute_s:6.2f} s   "
        f"ratio {large.recompute_s / small.recompute_s:.2f}",
        f"growth_ratio={f.growth_ratio:.2f} spark_vs_duckdb={f.spark_vs_duckdb:.2f}",
    ]
