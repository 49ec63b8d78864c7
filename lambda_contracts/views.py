"""Views, declared once: the batch layer (Spark) and the speed layer (DuckDB) both run these.

A view groups one or more event types by time bucket and dimensions and keeps only mergeable
measures: partial results over disjoint sets of events combine exactly, which is what lets serving
add batch rows and speed rows. Count, sum, min and max merge by value. An exact distinct count
does not (the same user may be counted by the batch and by the speed layer): its partial rows
keep the counted values themselves as an extra key (``Measure.member``), merged partial rows are
their union, and only the served rows count them (``View.final_sql``). The SQL below is the
shared subset of Spark SQL and DuckDB SQL; both sessions must run in UTC (see
``lambda_contracts.duck``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

Aggregate = Literal["count", "sum", "min", "max", "count_distinct"]
Grain = Literal["minute", "hour", "day"]

BUCKET = "bucket"
"""Every view's first key: the start of its time bucket (UTC)."""

_MERGE: dict[Aggregate, str] = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}
"""How partial values of each aggregate combine (a distinct count combines its members instead)."""


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
    when: str | None = None
    """Only events of this type count (a view over several event types); for count and sum."""

    def __post_init__(self) -> None:
        if (self.aggregate == "count") != (self.column is None):
            raise ValueError(f"measure {self.name}: count takes no column, the others need one")
        if self.when is not None and self.aggregate not in ("count", "sum"):
            raise ValueError(f"measure {self.name}: only count and sum take `when` (min/max of nothing is no value)")
        if self.distinct and self.sql_type != "BIGINT":
            raise ValueError(f"measure {self.name}: a distinct count is a BIGINT")

    @property
    def distinct(self) -> bool:
        return self.aggregate == "count_distinct"

    @property
    def member(self) -> str:
        """The key column that holds the counted values in partial rows (distinct counts only)."""
        return f"{self.name}_member"

    def aggregate_sql(self) -> str:
        """This measure over events, in partial rows (not called for distinct counts: they are keys there)."""
        if self.when is None:
            inner = "count(*)" if self.aggregate == "count" else f"{self.aggregate}({self.column})"
        else:
            value = "1" if self.aggregate == "count" else self.column
            inner = f"sum(CASE WHEN event_type = '{self.when}' THEN {value} ELSE 0 END)"
        return f"CAST({inner} AS {self.sql_type}) AS {self.name}"

    def merge_sql(self) -> str:
        """How partial results of this measure combine (a count of counts is their sum)."""
        return f"CAST({_MERGE[self.aggregate]}({self.name}) AS {self.sql_type}) AS {self.name}"

    def final_sql(self) -> str:
        """The served value from merged partial rows: a distinct count counts its members at last."""
        if self.distinct:
            return f"CAST(count(DISTINCT {self.member}) AS {self.sql_type}) AS {self.name}"
        return self.merge_sql()


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
    event_types: tuple[str, ...]
    grain: Grain
    dimensions: tuple[Dimension, ...]
    measures: tuple[Measure, ...]
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        typed = [m for m in self.measures if m.when is not None]
        if len(self.event_types) > 1 and len(typed) != len(self.measures):
            raise ValueError(f"view {self.name}: over several event types, every measure says `when`")
        if any(m.when not in self.event_types for m in typed):
            raise ValueError(f"view {self.name}: a measure's `when` is not one of the view's event types")

    @property
    def partial_dimensions(self) -> tuple[Dimension, ...]:
        """The keys of partial rows: the dimensions, then the members of each distinct count."""
        members = tuple(Dimension(m.member, m.column or "") for m in self.measures if m.distinct)
        return (*self.dimensions, *members)

    @property
    def partial_measures(self) -> tuple[Measure, ...]:
        """The measures partial rows carry as values (distinct counts are keys there)."""
        return tuple(m for m in self.measures if not m.distinct)

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Key columns of partial rows: what the batch and speed layers store and merge on."""
        return (BUCKET, *(d.name for d in self.partial_dimensions))

    @property
    def measure_columns(self) -> tuple[str, ...]:
        """Value columns of partial rows."""
        return tuple(m.name for m in self.partial_measures)

    @property
    def served_columns(self) -> tuple[str, ...]:
        """The columns of the served view, in order: bucket, dimensions, measures as declared."""
        return (BUCKET, *(d.name for d in self.dimensions), *(m.name for m in self.measures))

    def aggregate_sql(self, relation: str, by: tuple[str, ...] = ()) -> str:
        """Partial view rows over ``relation`` (rows in the event schema, already deduplicated).

        ``by`` names extra leading key columns (the speed layer aggregates per Kafka partition).
        """
        bucket = f"date_trunc('{self.grain}', event_time)"
        select = [*by, f"{bucket} AS {BUCKET}"]
        select += [f"{d.source} AS {d.name}" for d in self.partial_dimensions]
        select += [m.aggregate_sql() for m in self.partial_measures]
        types = ", ".join(f"'{t}'" for t in self.event_types)
        where = [f"event_type IN ({types})", *(f.sql() for f in self.filters)]
        group = [*by, bucket, *(d.source for d in self.partial_dimensions)]
        return f"SELECT {', '.join(select)} FROM {relation} WHERE {' AND '.join(where)} GROUP BY {', '.join(group)}"

    def merge_sql(self, relation: str, by: tuple[str, ...] = ()) -> str:
        """Combine partial rows (batch and speed, or several speed segments) into partial rows."""
        keys = ", ".join((*by, *self.key_columns))
        measures = "".join(f", {m.merge_sql()}" for m in self.partial_measures)
        return f"SELECT {keys}{measures} FROM {relation} GROUP BY {keys}"

    def final_sql(self, relation: str) -> str:
        """The served rows from partial rows (batch and speed together): distinct counts are counted here."""
        keys = ", ".join((BUCKET, *(d.name for d in self.dimensions)))
        measures = ", ".join(m.final_sql() for m in self.measures)
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
        event_types=("page_view",),
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
        event_types=("purchase",),
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
        event_types=("sensor_reading",),
        grain="minute",
        dimensions=(Dimension("device_id", "entity_key"), Dimension("metric")),
        measures=(
            Measure("readings", "count"),
            Measure("value_sum", "sum", "value", READING_SUM),
            Measure("value_min", "min", "value", READING),
            Measure("value_max", "max", "value", READING),
        ),
    ),
    View(
        name="cart_to_purchase_per_hour",
        description="Add-to-cart and purchase events and units per product per hour (conversion = purchases / carts).",
        event_types=("add_to_cart", "purchase"),
        grain="hour",
        dimensions=(Dimension("product_id"),),
        measures=(
            Measure("carts", "count", when="add_to_cart"),
            Measure("units_carted", "sum", "quantity", when="add_to_cart"),
            Measure("purchases", "count", when="purchase"),
            Measure("units_purchased", "sum", "quantity", when="purchase"),
        ),
    ),
)
VIEWS_BY_NAME = {view.name: view for view in VIEWS}
VIEW_NAMES = tuple(view.name for view in VIEWS)

PAGE_USERS_PER_HOUR = View(
    name="page_users_per_hour",
    description="Distinct users (exact) and views per page per hour, web and app together.",
    event_types=("page_view",),
    grain="hour",
    dimensions=(Dimension("page"),),
    measures=(Measure("users", "count_distinct", "entity_key"), Measure("views", "count")),
)
"""Declared and tested (Spark = DuckDB, merged halves = ``count(DISTINCT)``), not served by default: its
partial rows (one per page, hour and user: about 34,000 per 100,000 events against 7,700 for the other
views together) made every speed publish heavier, and produce-to-visible p50 rose from about 1,040 to
1,510 ms in the freshness benchmark. Add it to ``VIEWS`` to serve it (README, "Adding a view")."""

FIRST_VIEWS = ("page_views_per_minute", "product_sales_per_hour", "sensor_stats_per_minute")
"""The views of batch manifests and speed snapshots written before they listed their views."""


def canonical_text(value: Any) -> str:
    """One text per view value, so rows from DuckDB, Arrow or Spark compare equal when their values do
    (timestamps in UTC, decimals without trailing zeros)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return str(value.normalize()) if value else "0"
    return str(value)
