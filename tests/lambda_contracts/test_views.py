"""Views are written once: Spark and DuckDB compute identical rows from the same events."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from lambda_contracts.columns import events_to_arrow
from lambda_contracts.events import SOURCES
from lambda_contracts.intake import split
from lambda_contracts.plumbing import duck
from lambda_contracts.serde import JsonSerde
from lambda_contracts.views import PAGE_USERS_PER_HOUR, VIEWS, VIEWS_BY_NAME, Measure, View, deduplicated_sql
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
@pytest.mark.parametrize("view", (*VIEWS, PAGE_USERS_PER_HOUR), ids=lambda v: v.name)
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


def deduplicated_events(count: int = 4000) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A connection with the sample registered, and the SQL of its first copies (a subquery)."""
    connection = duck.connect()
    connection.register("events", sample_events(count))
    return connection, f"({deduplicated_sql('events')})"


@pytest.mark.unit
def test_merging_partial_results_equals_computing_at_once() -> None:
    """Mergeable measures: rows over two disjoint halves, merged, equal rows over the whole."""
    connection, deduplicated = deduplicated_events()
    for view in VIEWS:
        whole = connection.execute(view.aggregate_sql(f"{deduplicated} AS d")).fetchall()
        first = f"(SELECT * FROM {deduplicated} WHERE kafka_offset < 500) AS first_half"
        second = f"(SELECT * FROM {deduplicated} WHERE kafka_offset >= 500) AS second_half"
        halves = f"({view.aggregate_sql(first)} UNION ALL {view.aggregate_sql(second)}) AS partials"
        assert normalised(connection.execute(view.merge_sql(halves)).fetchall()) == normalised(whole), view.name


@pytest.mark.unit
def test_declarations_refuse_a_count_with_a_column() -> None:
    with pytest.raises(ValueError, match="count takes no column"):
        Measure("n", "count", "amount")


@pytest.mark.unit
def test_distinct_counts_over_merged_halves_equal_count_distinct_over_the_whole() -> None:
    """Users seen in both halves count once: partial rows keep their members, served rows count them."""
    connection, deduplicated = deduplicated_events()
    view = PAGE_USERS_PER_HOUR
    first = f"(SELECT * FROM {deduplicated} WHERE kafka_offset < 700) AS first_half"
    second = f"(SELECT * FROM {deduplicated} WHERE kafka_offset >= 700) AS second_half"
    halves = f"({view.aggregate_sql(first)} UNION ALL {view.aggregate_sql(second)}) AS partials"
    served = connection.execute(view.final_sql(f"({view.merge_sql(halves)}) AS merged")).fetchall()
    expected = connection.execute(
        "SELECT date_trunc('hour', event_time), page, count(DISTINCT entity_key), count(*) "
        f"FROM {deduplicated} WHERE event_type = 'page_view' GROUP BY 1, 2"
    ).fetchall()
    assert len(expected) > 20
    assert normalised(served) == normalised(expected)
    both = connection.execute(
        f"SELECT count(*) FROM (SELECT users_member FROM ({view.aggregate_sql(first)}) INTERSECT "
        f"SELECT users_member FROM ({view.aggregate_sql(second)}))"
    ).fetchone()
    assert both is not None and both[0] > 0, "some users are in both halves: a sum of counts would be wrong"


@pytest.mark.unit
def test_a_view_over_two_event_types_counts_each_measure_for_its_own_type() -> None:
    connection, events = deduplicated_events()
    deduplicated = f"{events} AS d"
    view = VIEWS_BY_NAME["cart_to_purchase_per_hour"]
    served = connection.execute(view.final_sql(f"({view.aggregate_sql(deduplicated)}) AS p")).fetchall()
    expected = connection.execute(
        "SELECT date_trunc('hour', event_time), product_id, "
        "count(*) FILTER (WHERE event_type = 'add_to_cart'), "
        "coalesce(sum(quantity) FILTER (WHERE event_type = 'add_to_cart'), 0), "
        "count(*) FILTER (WHERE event_type = 'purchase'), "
        "coalesce(sum(quantity) FILTER (WHERE event_type = 'purchase'), 0) "
        f"FROM {deduplicated} WHERE event_type IN ('add_to_cart', 'purchase') GROUP BY 1, 2"
    ).fetchall()
    assert any(row[2] and row[4] for row in expected), "the sample has carts and purchases of one product"
    assert normalised(served) == normalised(expected)


@pytest.mark.unit
def test_declarations_refuse_what_would_not_merge() -> None:
    with pytest.raises(ValueError, match="only count and sum take `when`"):
        Measure("m", "max", "amount", when="purchase")
    with pytest.raises(ValueError, match="every measure says `when`"):
        View("v", "", ("add_to_cart", "purchase"), "hour", (), (Measure("n", "count"),))
    with pytest.raises(ValueError, match="not one of the view's event types"):
        View("v", "", ("purchase",), "hour", (), (Measure("n", "count", when="page_view"),))
