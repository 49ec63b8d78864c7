"""A readable account of the lake: version, rows, and how far each partition is complete."""

from __future__ import annotations

import pyarrow as pa

from batch_layer.lake import Lake
from lambda_contracts.plumbing.kafka import new_consumer, topic_offsets
from lambda_contracts.settings import Settings


def describe_lake(settings: Settings) -> list[str]:
    lake = Lake(settings.lake_path, settings.events_topic)
    table = lake.table()
    if table is None:
        return [f"no lake yet at {settings.lake_path}: start the sink with `lambdactl lake-sink`"]
    consumer = new_consumer(settings, group_id=None)
    try:
        ends = topic_offsets(consumer, settings.events_topic)
    finally:
        consumer.close(autocommit=False)
    partitions = sorted(ends)
    committed = lake.committed_offsets(partitions, table)
    rows = sum(pa.table(table.get_add_actions(flatten=True)).column("num_records").to_pylist())
    lines = [f"lake {settings.lake_path}: Delta version {table.version()}, {rows:,} rows"]
    for partition in partitions:
        end = ends[partition]
        lines.append(
            f"  partition {partition}: complete below offset {committed[partition]:,} "
            f"(topic end {end:,}, behind by {end - committed[partition]:,})"
        )
    return lines
