"""An independent recomputation of the views: plain Python over rows, straight from the declarations.

It shares nothing with the SQL compiler but the declarations themselves (the specification):
each event once (first copy by partition and offset), bucketed in UTC, aggregated with Decimal.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import Accepted, split
from lambda_contracts.plumbing import duck
from lambda_contracts.serde import JsonSerde, Rejection
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import partition_root, read_snapshot
from lambda_contracts.views import BUCKET, VIEWS, View, canonical_text
from serving_layer.query import serving_connection
from sources.run import build_simulators
from sources.simulators import merged_records
from tests.flows import read_topic

Row = tuple[Any, ...]


def truncate(moment: datetime, grain: str) -> datetime:
    moment = moment.astimezone(UTC)
    if grain == "minute":
        return moment.replace(second=0, microsecond=0)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def first_copies(
    rows: Iterable[Mapping[str, Any]], cutoffs: Mapping[int, int] | None = None
) -> list[Mapping[str, Any]]:
    """Each event once, among the rows below the cutoffs (all rows if none are given)."""
    kept: dict[str, Mapping[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["kafka_partition"], r["kafka_offset"])):
        if cutoffs is not None and row["kafka_offset"] >= cutoffs.get(row["kafka_partition"], 0):
            continue
        kept.setdefault(row["event_id"], row)
    return list(kept.values())


def view_rows(events: Iterable[Mapping[str, Any]], view: View) -> list[Row]:
    """The view's served rows: bucket, dimensions, then each measure as declared."""
    groups: dict[Row, dict[str, Any]] = {}
    for event in events:
        if event["event_type"] not in view.event_types:
            continue
        if any(event[f.column] not in f.values for f in view.filters):
            continue
        key = (truncate(event["event_time"], view.grain), *(event[d.source] for d in view.dimensions))
        measures = groups.setdefault(key, {})
        for measure in view.measures:
            if measure.aggregate == "count_distinct":
                measures.setdefault(measure.name, set()).add(event[measure.column])  # type: ignore[index]
                continue
            value = 1 if measure.aggregate == "count" else event[measure.column]  # type: ignore[index]
            if measure.when is not None and event["event_type"] != measure.when:
                value = 0  # counted only for its own event type
            if measure.name not in measures:
                measures[measure.name] = value
            elif measure.aggregate in ("count", "sum"):
                measures[measure.name] += value
            elif measure.aggregate == "min":
                measures[measure.name] = min(measures[measure.name], value)
            else:
                measures[measure.name] = max(measures[measure.name], value)
    names = [m.name for m in view.measures]
    rows = (
        (*key, *(len(v) if isinstance(v, set) else v for v in (m[name] for name in names))) for key, m in groups.items()
    )
    return sorted(rows, key=repr)


def parquet_rows(files: list[str], view: View) -> list[Row]:
    """Served rows from a view's partial rows in Parquet files, in the oracle's shape."""
    if not files:
        return []
    connection = duck.connect()
    partials = f"(SELECT * FROM read_parquet({files!r}, hive_partitioning = false)) AS partials"
    rows = connection.execute(view.final_sql(partials)).fetchall()
    return sorted((tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in row) for row in rows), key=repr)


def normalised_rows(table: Any) -> list[Row]:
    """An Arrow table's rows in the oracle's shape (None: no rows)."""
    if table is None:
        return []
    columns = table.column_names
    rows = []
    for record in table.to_pylist():
        rows.append(tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in (record[c] for c in columns)))
    return sorted(rows, key=repr)


def served_rows(view: View, partials: Any) -> list[Row]:
    """The served rows of an Arrow table of a view's partial rows (None: no rows), in the oracle's shape."""
    if partials is None:
        return []
    connection = duck.connect()
    try:
        connection.register("partial_rows", partials)
        return normalised_rows(connection.sql(view.final_sql("partial_rows")).to_arrow_table())
    finally:
        connection.close()


Reading = tuple[list[dict[str, Any]], dict[str, list[Row]]]  # serving_status rows, merged rows per view


def read_python_api(settings: Settings) -> Reading:
    """serving_status and every merged view through one serving connection (one snapshot)."""
    connection = serving_connection(settings)
    try:
        status = connection.sql("SELECT * FROM serving_status").to_arrow_table().to_pylist()
        merged = {v.name: normalised_rows(connection.sql(f"SELECT * FROM {v.name}").to_arrow_table()) for v in VIEWS}
    finally:
        connection.close()
    return status, merged


def compare(settings: Settings, read: Callable[[Settings], Reading] = read_python_api) -> tuple[int, bool]:
    """Compare every merged view, as ``read`` sees them in one snapshot, with the oracle; returns records
    reflected and whether any partition was between a batch publish and the speed layer's prune."""
    status, merged = read(settings)
    in_grace = False
    for row in status:  # read now, before the speed layer's next publish may end the grace period
        snapshot = read_snapshot(settings.speed_views_path, row["kafka_partition"])
        if snapshot and row["speed_used"] and any(s.end <= row["batch_cutoff"] for s in snapshot.segments):
            in_grace = True  # speed rows below the cutoff still published, and correctly left out
    reflected = {row["kafka_partition"]: row["reflected_offset"] for row in status}
    events = reflected_events(settings, reflected)
    for view in VIEWS:
        assert merged[view.name] == view_rows(events, view), f"{view.name} differs from the recompute"
    return sum(reflected.values()), in_grace


def reflected_events(settings: Settings, reflected: Mapping[int, int]) -> list[Mapping[str, Any]]:
    """Each valid event once, of the topic's records below the ``reflected`` offsets per partition."""
    records = [r for r in read_topic(settings, settings.events_topic) if r.offset < reflected.get(r.partition, 0)]
    accepted, _ = split(records, JsonSerde(), rejected_by="oracle")
    return first_copies(events_to_arrow(accepted).to_pylist())


def canonical(rows: Iterable[Row]) -> Counter[tuple[str, ...]]:
    """Rows as a multiset of text, so equal values compare equal whatever their type or scale."""

    return Counter(tuple(canonical_text(v) for v in row) for row in rows)


def simulated_view_rows(runs: Iterable[tuple[int, datetime, int, float]]) -> dict[str, Counter[tuple[str, ...]]]:
    """What the views hold after ``lambdactl simulate --fast --seed S --start T --count N --rate R`` runs.

    The simulators are deterministic, so the same records are made here, independently of Kafka;
    redeliveries are byte-for-byte copies, so counting each ``event_id`` once in generation order
    is what any first-copy rule gives.
    """
    accepted: list[Accepted] = []
    seen: set[str] = set()
    for seed, start, count, rate in runs:
        simulators = build_simulators(serde=JsonSerde(), start=start, seed=seed, rate=rate)
        for record in itertools.islice(merged_records(simulators), count):
            event = JsonSerde().decode(record.value)
            if isinstance(event, Rejection) or str(event.event_id) in seen:
                continue
            seen.add(str(event.event_id))
            accepted.append(Accepted(0, len(accepted), event, record.value))
    events = events_to_arrow(accepted).to_pylist()
    return {view.name: canonical(view_rows(events, view)) for view in VIEWS}


def json_rows(lines: str, view: View) -> Counter[tuple[str, ...]]:
    """``lambdactl sql --json`` output for a view, in ``canonical`` form."""
    rows = []
    for line in lines.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        bucket = datetime.fromisoformat(record[BUCKET])
        dims = [record[d.name] for d in view.dimensions]
        measures = [int(record[m.name]) if m.sql_type == "BIGINT" else Decimal(record[m.name]) for m in view.measures]
        rows.append((bucket, *dims, *measures))
    return canonical(rows)


def speed_rows(settings: Settings) -> dict[str, list[tuple[object, ...]]]:
    """Every view's published speed rows, merged across partitions and segments."""
    connection = duck.connect()
    merged: dict[str, list[tuple[object, ...]]] = {}
    for view in VIEWS:
        files = []
        for partition in range(settings.topic_partitions):
            snapshot = read_snapshot(settings.speed_views_path, partition)
            assert snapshot is not None and snapshot.covers_from(0)
            root = partition_root(settings.speed_views_path, partition)
            files += [str(root / s.folder / f"{view.name}.parquet") for s in snapshot.segments if view.name in s.views]
        partials = f"(SELECT * FROM read_parquet({files!r}, hive_partitioning = false)) AS partials"
        merged[view.name] = normalised_rows(connection.sql(view.final_sql(partials)).to_arrow_table())
    return merged
