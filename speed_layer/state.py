"""The speed layer's state for one Kafka partition: partial view rows per segment of offsets.

Micro-batches are aggregated in DuckDB over Arrow (vectorized) and merged into the open
segment with the views' merge rules. Each event counts once: in the segment of its first copy,
tracked by the set of event ids seen in the retained segments (and, for a while, in pruned ones).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import Accepted
from lambda_contracts.speed_snapshot import Segment
from lambda_contracts.views import VIEWS


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
    open_ids: list[tuple[str, int]] = field(default_factory=list)
    """(event id, offset) of the events first seen in the open segment."""
    seen: dict[str, int] = field(default_factory=dict)
    """Event id -> offset of its first copy, over the retained segments and the dedup horizon."""
    pruning: list[Pending] = field(default_factory=list)
    dedup: list[Pending] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    changed: bool = False
    pending: list[Accepted] = field(default_factory=list)
    """New events not yet aggregated: they are aggregated together at the next ``settle``."""
    last_open_folder: str | None = None
    """Where the last publish wrote the still-open segment (superseded by the next publish)."""

    def take(self, accepted: list[Accepted], end_offset: int) -> int:
        """Keep the new events among ``accepted`` for the open segment; returns how many were new.

        ``end_offset`` is one past the last record consumed (invalid ones included).
        """
        if not self.changed and self.next_offset == self.open_start:
            self.opened_at = time.monotonic()
        fresh = []
        for item in accepted:
            event_id = str(item.event.event_id)
            if event_id not in self.seen:
                self.seen[event_id] = item.offset
                fresh.append(item)
        if fresh:
            self.open_ids.extend((str(item.event.event_id), item.offset) for item in fresh)
            self.pending.extend(fresh)
        self.next_offset = end_offset
        self.changed = True
        return len(fresh)

    def settle(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Aggregate the pending events into the open segment: one vectorized pass per view."""
        if self.pending:
            events, self.pending = events_to_arrow(self.pending), []
            self._aggregate(events, connection)

    def _aggregate(self, events: pa.Table, connection: duckdb.DuckDBPyConnection) -> None:
        connection.register("micro_batch", events)
        try:
            for view in VIEWS:
                partial = connection.sql(view.aggregate_sql("micro_batch")).to_arrow_table()
                previous = self.open_rows.get(view.name)
                if previous is None or previous.num_rows == 0:
                    self.open_rows[view.name] = partial
                    continue
                connection.register("previous_rows", previous)
                connection.register("partial_rows", partial)
                both = "(SELECT * FROM previous_rows UNION ALL SELECT * FROM partial_rows) AS both_parts"
                self.open_rows[view.name] = connection.sql(view.merge_sql(both)).to_arrow_table()
                connection.unregister("previous_rows")
                connection.unregister("partial_rows")
        finally:
            connection.unregister("micro_batch")

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
