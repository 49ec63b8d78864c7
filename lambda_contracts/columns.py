"""The columnar shape of events: the lake's schema, and the Arrow batches consumers compute on.

Every payload field gets its own typed, nullable column, so views are plain SQL over columns
in Spark and DuckDB alike. Each row keeps its Kafka coordinates: the exact merge decides by
``(kafka_partition, kafka_offset)`` which layer counts an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from lambda_contracts.intake import Accepted

MONEY = pa.decimal128(12, 2)
READING = pa.decimal128(15, 3)
UTC_MICROS = pa.timestamp("us", tz="UTC")

PAYLOAD_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("page", pa.string()),
    ("referrer", pa.string()),
    ("session_id", pa.string()),
    ("duration_ms", pa.int64()),
    ("product_id", pa.string()),
    ("quantity", pa.int32()),
    ("unit_price", MONEY),
    ("order_id", pa.string()),
    ("amount", MONEY),
    ("currency", pa.string()),
    ("metric", pa.string()),
    ("value", READING),
    ("firmware", pa.string()),
)

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("event_time", UTC_MICROS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("entity_key", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
        *(pa.field(name, kind) for name, kind in PAYLOAD_COLUMNS),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ]
)
"""One row per valid Kafka record; ``event_date`` is the UTC day of ``event_time``."""

LAKE_SCHEMA = EVENT_SCHEMA.append(pa.field("ingested_at", UTC_MICROS, nullable=False))
LAKE_PARTITION_COLUMNS = ["event_date", "kafka_partition"]
"""Files per event day and Kafka partition: a file's offset statistics then bound exactly the records of
one partition, so a batch run reads only the files holding its new offsets."""


def events_to_arrow(accepted: Sequence[Accepted]) -> pa.Table:
    """Accepted records as an Arrow table in ``EVENT_SCHEMA``."""
    columns: dict[str, list[Any]] = {field.name: [] for field in EVENT_SCHEMA}
    payload_names = [name for name, _ in PAYLOAD_COLUMNS]
    for item in accepted:
        event = item.event
        columns["event_id"].append(str(event.event_id))
        columns["event_type"].append(event.event_type)
        columns["source"].append(event.source)
        columns["event_time"].append(event.event_time)
        columns["event_date"].append(event.event_time.date())
        columns["entity_key"].append(event.entity_key)
        columns["schema_version"].append(event.schema_version)
        payload = event.payload.__dict__  # the model's field values; a missing one is None (no getattr miss)
        for name in payload_names:
            columns[name].append(payload.get(name))
        columns["kafka_partition"].append(item.partition)
        columns["kafka_offset"].append(item.offset)
    return pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)


def with_ingest_time(events: pa.Table, ingested_at: datetime) -> pa.Table:
    """Events as lake rows: stamped with when the sink wrote them."""
    stamp = pa.array([ingested_at] * events.num_rows, type=UTC_MICROS)
    return events.append_column(LAKE_SCHEMA.field("ingested_at"), stamp)


def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow type of a view measure's declared SQL type (``BIGINT`` or ``DECIMAL(p,s)``)."""
    if sql_type == "BIGINT":
        return pa.int64()
    precision, scale = sql_type.removeprefix("DECIMAL(").removesuffix(")").split(",")
    return pa.decimal128(int(precision), int(scale))
