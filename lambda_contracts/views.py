"""Views, declared once: the batch layer (Spark) and the speed layer (DuckDB) both run these.

A view groups one event type by time bucket and dimensions and keeps only mergeable measures
(count, sum, min, max): partial results over disjoint sets of events combine exactly, which is
what lets serving add batch rows and speed rows. The SQL below is the shared subset of Spark
SQL and DuckDB SQL; both sessions must run in UTC (see ``lambda_contracts.duck``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

Aggregate = Literal["count", "sum", "min", "max"]
Grain = Literal["minute", "hour", "day"]

BUCKET = "bucket"
"""Every view's first key: the start of its time bucket (UTC)."""

_MERGE: dict[Aggregate, str] = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}


@dataclass(frozen=True)
class Dimension:
    name: str
    column: str = ""

    @property
    def source(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class Measure:
    name: str
    aggregate: Aggregate
    column: str | None = None
    sql_type: str = "BIGINT"
    """The declared output type, identical in both engines (e.g. DECIMAL(38,2) for money sums)."""

    def __post_init__(self) -> None:
        if (self.aggregate == "count") != (self.column is None):
            raise ValueError(f"measure {self.name}: count takes no column, the others need one")

    def aggregate_sql(self) -> str:
        inner = "count(*)" if self.aggregate == "count" else f"{self.aggregate}({self.column})"
        return f"CAST({inner} AS {self.sql_type}) AS {self.name}"

    def merge_sql(self) -> str:
        """How partial results of this measure combine (a count of counts is their sum)."""
        return f"CAST({_MERGE[self.aggregate]}({self.name}) AS {self.sql_type}) AS {self.name}"


@dataclass(frozen=True)
class Filter:
    column: str
    values: tuple[str, ...]

    def sql(self) -> str:
        quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in self.values)
        return f"{self.column} IN ({quoted})"


@dataclass(frozen=True)
class View:
    name: str
    description: str
    event_type: str
    grain: Grain
    dimensions: tuple[Dimension, ...]
    measures: tuple[Measure, ...]
    filters: tuple[Filter, ...] = ()

    @property
    def key_columns(self) -> tuple[str, ...]:
        return (BUCKET, *(d.name for d in self.dimensions))

    @property
    def measure_columns(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.measures)

    def aggregate_sql(self, relation: str, by: tuple[str, ...] = ()) -> str:
        """Partial view rows over ``relation`` (rows in the event schema, already deduplicated).

        ``by`` names extra leading key columns (the speed layer aggregates per Kafka partition).
        """
        bucket = f"date_trunc('{self.grain}', event_time)"
        select = [*by, f"{bucket} AS {BUCKET}"]
        select += [f"{d.source} AS {d.name}" for d in self.dimensions]
        select += [m.aggregate_sql() for m in self.measures]
        where = [f"event_type = '{self.event_type}'", *(f.sql() for f in self.filters)]
        group = [*by, bucket, *(d.source for d in self.dimensions)]
        return f"SELECT {', '.join(select)} FROM {relation} WHERE {' AND '.join(where)} GROUP BY {', '.join(group)}"

    def merge_sql(self, relation: str, by: tuple[str, ...] = ()) -> str:
        """Combine partial rows (batch and speed, or several speed segments) into final rows."""
        keys = ", ".join((*by, *self.key_columns))
        measures = ", ".join(m.merge_sql() for m in self.measures)
        return f"SELECT {keys}, {measures} FROM {relation} GROUP BY {keys}"


def deduplicated_sql(relation: str) -> str:
    """Each event once: the first record of an ``event_id`` by (partition, offset) wins.

    Redeliveries are byte-for-byte copies on the same partition (same key), so the rule also
    tells the speed layer which copy counts: the one it saw first.
    """
    return (
        "SELECT * FROM (SELECT *, row_number() OVER "
        "(PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) AS copy_number "
        f"FROM {relation}) WHERE copy_number = 1"
    )


MONEY_SUM = "DECIMAL(38,2)"
READING = "DECIMAL(15,3)"
READING_SUM = "DECIMAL(38,3)"

VIEWS: tuple[View, ...] = (
    View(
        name="page_views_per_minute",
        description="Page views per page and source (web or app) per minute, with time on page.",
        event_type="page_view",
        grain="minute",
        dimensions=(Dimension("page"), Dimension("source")),
        measures=(
            Measure("views", "count"),
            Measure("duration_ms_sum", "sum", "duration_ms"),
            Measure("duration_ms_max", "max", "duration_ms"),
        ),
    ),
    View(
        name="product_sales_per_hour",
        description="Orders, units and revenue (EUR) per product per hour, web and app together.",
        event_type="purchase",
        grain="hour",
        dimensions=(Dimension("product_id"),),
        measures=(
            Measure("orders", "count"),
            Measure("units", "sum", "quantity"),
            Measure("revenue", "sum", "amount", MONEY_SUM),
            Measure("largest_order", "max", "amount", "DECIMAL(12,2)"),
        ),
    ),
    View(
        name="sensor_stats_per_minute",
        description="Readings per device and metric per minute: count, sum, min and max (mean = sum / count).",
        event_type="sensor_reading",
        grain="minute",
        dimensions=(Dimension("device_id", "entity_key"), Dimension("metric")),
        measures=(
            Measure("readings", "count"),
            Measure("value_sum", "sum", "value", READING_SUM),
            Measure("value_min", "min", "value", READING),
            Measure("value_max", "max", "value", READING),
        ),
    ),
)
VIEWS_BY_NAME = {view.name: view for view in VIEWS}


def canonical_text(value: Any) -> str:
    """One text per view value, so rows from DuckDB, Arrow or Spark compare equal when their values do
    (timestamps in UTC, decimals without trailing zeros)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return str(value.normalize()) if value else "0"
    return str(value)
