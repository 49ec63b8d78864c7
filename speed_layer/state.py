"""The speed layer's state for one Kafka partition: partial view rows per segment of offsets.

Micro-batches are aggregated in DuckDB over Arrow (vectorized) and merged into the open
segment with the views' merge rules. Each event counts once: in the segment of its first copy,
tracked by the set of event ids seen in the retained segments (and, for a while, in pruned ones).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from lambda_contracts.columns import EVENT_SCHEMA
from lambda_contracts.speed_snapshot import Segment
from lambda_contracts.views import VIEWS

ID_SCHEMA = pa.schema([EVENT_SCHEMA.field("event_id"), EVENT_SCHEMA.field("kafka_offset")])
"""What a segment remembers of each first copy, for deduplication after a restart."""


@dataclass
class Pending:
    """A segment (or ids folder) that stays until ``deadline``, then goes."""

    deadline: float
    segment: Segment


@dataclass
class PartitionState:
    partition: int
    open_start: int
    next_offset: int
    cutoff: int
    sequence: int = 0
    segments: list[Segment] = field(default_factory=list)
    """Sealed, published segments, in offset order."""
    open_rows: dict[str, pa.Table] = field(default_factory=dict)
    open_ids: list[pa.Table] = field(default_factory=list)
    """Chunks of (event_id, kafka_offset): events first seen in the open segment since the last publish."""
    seen: dict[str, int] = field(default_factory=dict)
    """Event id -> offset of its first copy, over the retained segments and the dedup horizon."""
    pruning: list[Pending] = field(default_factory=list)
    dedup: list[Pending] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    changed: bool = False
    pending: list[pa.Table] = field(default_factory=list)
    """New events not yet aggregated: they are aggregated together at the next ``settle``."""
    last_open_folder: str | None = None
    """Where the last publish wrote the still-open segment (superseded by the next publish)."""

    def take(self, events: pa.Table, end_offset: int) -> int:
        """Keep the first copies among ``events`` (rows in ``EVENT_SCHEMA``); returns how many.

        ``end_offset`` is one past the last record consumed (invalid ones included).
        """
        if not self.changed and self.next_offset == self.open_start:
            self.opened_at = time.monotonic()
        ids = events.column("event_id").to_pylist()
        offsets = events.column("kafka_offset").to_pylist()
        seen, first = self.seen, []
        for event_id, offset in zip(ids, offsets, strict=True):
            if event_id not in seen:
                seen[event_id] = offset
                first.append(True)
            else:
                first.append(False)
        fresh = events if all(first) else events.filter(pa.array(first, pa.bool_()))
        if fresh.num_rows:
            self.pending.append(fresh)
            self.open_ids.append(fresh.select(ID_SCHEMA.names))
        self.next_offset = end_offset
        self.changed = True
        return int(fresh.num_rows)

    def settle(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Aggregate the pending events into the open segment."""
        settle_all([self], connection)

    @property
    def open_segment_empty(self) -> bool:
        return self.next_offset == self.open_start

    def seal_due(self, seconds: float) -> bool:
        return not self.open_segment_empty and time.monotonic() - self.opened_at >= seconds

    def sealed(self, segment: Segment) -> None:
        """The open segment was published as ``segment`` (sealed): start a new open segment."""
        self.segments.append(segment)
        self.open_start = self.next_offset
        self.open_rows = {}
        self.open_ids = []
        self.last_open_folder = None
        self.opened_at = time.monotonic()

    def restart_at(self, offset: int) -> None:
        """Drop everything at or above ``offset`` and continue from there (the caller seeks Kafka)."""
        self.open_start = self.next_offset = offset
        self.open_rows, self.open_ids, self.pending = {}, [], []
        self.last_open_folder = None
        self.seen = {event_id: first for event_id, first in self.seen.items() if first < offset}

    def forget(self, event_ids: list[str]) -> None:
        """Ids past the dedup horizon: a redelivery this late is counted by the batch layer alone."""
        for event_id in event_ids:
            self.seen.pop(event_id, None)

    def listed_segments(self) -> list[Segment]:
        """Sealed segments a snapshot lists: the retained ones and those still in their grace period."""
        return sorted([p.segment for p in self.pruning] + self.segments, key=lambda s: s.start)


BY_PARTITION = ("kafka_partition",)


def settle_all(states: Iterable[PartitionState], connection: duckdb.DuckDBPyConnection) -> None:
    """Aggregate every partition's pending events into its open segment: one pass per view for all.

    Micro-batches are aggregated in DuckDB over Arrow and merged with the open rows by the views'
    merge rules, grouped by partition; a query per view, not per view and partition, keeps the
    cost of a publish flat in the number of partitions a worker owns.
    """
    busy = [state for state in states if state.pending]
    if not busy:
        return
    events = pa.concat_tables([table for state in busy for table in state.pending])
    for state in busy:
        state.pending = []
    connection.register("micro_batch", events)
    try:
        for view in VIEWS:
            partial = f"({view.aggregate_sql('micro_batch', by=BY_PARTITION)})"
            previous = [
                _tagged(state.open_rows[view.name], state.partition) for state in busy if view.name in state.open_rows
            ]
            if previous:
                connection.register("previous_rows", pa.concat_tables(previous))
                partial = f"(SELECT * FROM previous_rows UNION ALL {partial})"
            merged = connection.sql(view.merge_sql(f"{partial} AS parts", by=BY_PARTITION)).to_arrow_table()
            partitions = merged.column("kafka_partition")
            for state in busy:
                rows = merged.filter(pc.equal(partitions, state.partition))
                state.open_rows[view.name] = rows.drop_columns(list(BY_PARTITION))
            if previous:
                connection.unregister("previous_rows")
    finally:
        connection.unregister("micro_batch")


def _tagged(rows: pa.Table, partition: int) -> pa.Table:
    return rows.add_column(0, "kafka_partition", pa.array([partition] * rows.num_rows, pa.int32()))
