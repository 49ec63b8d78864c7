"""Views are written once: Spark and DuckDB compute identical rows from the same events."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from lambda_contracts.columns import events_to_arrow
from lambda_contracts.events import SOURCES
from lambda_contracts.intake import split
from lambda_contracts.plumbing import duck
from lambda_contracts.serde import JsonSerde
from lambda_contracts.views import VIEWS, Measure, View, deduplicated_sql
from sources.run import build_simulators
from sources.simulators import merged_records
from tests.fakes import FakeRecord

START = datetime(2026, 11, 24, 10, tzinfo=UTC)


def sample_events(count: int = 6000) -> pa.Table:
    simulators = build_simulators(
        SOURCES,
        rate=50.0,
        serde=JsonSerde(),
        start=START,
        seed=8,
        late_share=0.3,
        max_lateness=timedelta(hours=2),
        duplicate_share=0.05,
        malformed_share=0.02,
    )
    records = [
        FakeRecord(r.value, offset=i // 3, partition=i % 3, key=r.key)
        for i, r in enumerate(itertools.islice(merged_records(simulators), count))
    ]
    accepted, _ = split(records, JsonSerde(), rejected_by="test")
    return events_to_arrow(accepted)


def normalised(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows as comparable tuples: instants in UTC, sorted by key."""
    out = []
    for row in rows:
        out.append(tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in row))
    return sorted(out, key=repr)


def duckdb_rows(events: pa.Table, view: View) -> list[tuple[Any, ...]]:
    connection = duck.connect()
    connection.register("events", events)
    sql = view.aggregate_sql(f"({deduplicated_sql('events')}) AS deduplicated")
    return normalised(connection.execute(sql).fetchall())


@pytest.mark.integration
@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_spark_and_duckdb_compute_identical_rows(spark: SparkSession, view: View) -> None:
    events = sample_events()
    spark.createDataFrame(events).createOrReplaceTempView("events")
    sql = view.aggregate_sql(f"({deduplicated_sql('events')}) AS deduplicated")
    spark_rows = [tuple(row) for row in spark.sql(sql).collect()]
    spark_rows = [tuple(v.replace(tzinfo=UTC) if isinstance(v, datetime) else v for v in row) for row in spark_rows]
    expected = duckdb_rows(events, view)
    assert len(expected) > 50
    assert normalised(spark_rows) == expected


@pytest.mark.unit
def test_duplicates_count_once_and_the_first_copy_wins() -> None:
    events = sample_events(3000)
    connection = duck.connect()
    connection.register("events", events)
    total, distinct = connection.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()  # type: ignore[misc]
    assert total > distinct, "the sample has redeliveries"
    kept = connection.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM ({deduplicated_sql('events')})"
    ).fetchone()
    assert kept == (distinct, distinct)


@pytest.mark.unit
def test_merging_partial_results_equals_computing_at_once() -> None:
    """Mergeable measures: rows over two disjoint halves, merged, equal rows over the whole."""
    events = sample_events(4000)
    connection = duck.connect()
    connection.register("events", events)
    for view in VIEWS:
        deduplicated = f"({deduplicated_sql('events')})"
        whole = connection.execute(view.aggregate_sql(f"{deduplicated} AS d")).fetchall()
        first = f"(SELECT * FROM {deduplicated} WHERE kafka_offset < 500) AS first_half"
        second = f"(SELECT * FROM {deduplicated} WHERE kafka_offset >= 500) AS second_half"
        halves = f"({view.aggregate_sql(first)} UNION ALL {view.aggregate_sql(second)}) AS partials"
        assert normalised(connection.execute(view.merge_sql(halves)).fetchall()) == normalised(whole), view.name


@pytest.mark.unit
def test_declarations_refuse_a_count_with_a_column() -> None:
    with pytest.raises(ValueError, match="count takes no column"):
        Measure("n", "count", "amount")
