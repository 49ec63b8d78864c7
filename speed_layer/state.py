"""The speed layer's state for one Kafka partition: partial view rows per segment of offsets.

Micro-batches are aggregated in DuckDB over Arrow (vectorized) and merged into the open
segment with the views' merge rules. Which events count (each ``event_id`` once, wherever its
copies land) is decided by the worker's ``Counted`` before they reach the state.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from lambda_contracts.columns import EVENT_SCHEMA
from lambda_contracts.plumbing.event_ids import ID_BYTES, id_bytes
from lambda_contracts.speed_snapshot import Segment
from lambda_contracts.views import VIEWS
from speed_layer.spill import Spill

ID_SCHEMA = pa.schema([pa.field("event_id", ID_BYTES, nullable=False), EVENT_SCHEMA.field("kafka_offset")])
"""What a segment records of each event it counted (16 bytes an id), for deduplication anywhere."""


@dataclass
class Pending:
    """A segment below the cutoff that stays listed until ``deadline`` (readers of the old version)."""

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
    """Chunks of (event_id, kafka_offset): events counted in the open segment since the last publish."""
    pruning: list[Pending] = field(default_factory=list)
    reconciled: int = 0
    """The batch version whose counted ids this state was checked against (see ``speed_snapshot``)."""
    valid_from: int = 0
    epoch: int = 0
    published_to: int = 0
    """The next offset of the last publish: what this state counted from here on, readers cannot see yet."""
    missing_views: tuple[str, ...] = ()
    """Declared views the restored snapshot had no rows of (declared since): a rebuild from the cutoff adds them."""
    hold_until: int = 0
    """A rebuild from below what was published is published only once it reaches this offset again:
    until then readers keep the previous snapshot, so no offset they see goes backwards."""
    leans_on: set[int] = field(default_factory=set)
    """Own partitions whose unpublished counts copies here were dropped for (``Claim.leaned_on``): they are
    published before this one, and if they lose those counts, so does this one."""
    opened_at: float = field(default_factory=time.monotonic)
    changed: bool = False
    pending: list[pa.Table] = field(default_factory=list)
    """New events not yet aggregated: they are aggregated together at the next ``settle``."""
    pending_rows: int = 0
    spill: Spill | None = None
    """Where a rebuild's pending events go beyond a limit (``spill_if_large``); None: in memory."""
    last_open_folder: str | None = None
    """Where the last publish wrote the still-open segment (superseded by the next publish)."""

    def take(self, fresh: pa.Table, end_offset: int) -> int:
        """Count ``fresh`` (rows in ``EVENT_SCHEMA`` that ``Counted.fresh`` let through); returns how many.

        ``end_offset`` is one past the last record consumed (invalid and duplicate ones included).
        """
        if not self.changed and self.next_offset == self.open_start:
            self.opened_at = time.monotonic()
        if fresh.num_rows:
            self.pending.append(fresh)
            self.pending_rows += fresh.num_rows
            ids = id_bytes(fresh.column("event_id"))
            self.open_ids.append(pa.table([ids, fresh.column("kafka_offset")], schema=ID_SCHEMA))
        self.next_offset = end_offset
        self.changed = True
        return int(fresh.num_rows)

    def drop_pending(self, counted_elsewhere: Callable[[pa.Array], npt.NDArray[np.bool_]]) -> int:
        """Un-count pending events (in memory or spilled) another partition published first; returns how many."""
        dropped = 0
        for index, chunk in enumerate(self.pending):
            gone = counted_elsewhere(chunk.column("event_id"))
            if gone.any():
                dropped += int(gone.sum())
                self.pending[index] = chunk.filter(pa.array(~gone))
        self.pending_rows -= dropped
        if dropped or (self.spill is not None and self.spill.files):
            ids = pa.concat_tables(self.open_ids)
            gone = counted_elsewhere(ids.column("event_id"))
            if gone.any():
                if self.spill is not None and self.spill.files:  # the open ids are the spilled and pending ones
                    self.spill.retract(ids.column("event_id").filter(pa.array(gone)))
                    dropped = int(gone.sum())
                self.open_ids = [ids.filter(pa.array(~gone))]
        return dropped

    def spill_if_large(self, folder: Path, limit: int) -> None:
        """A rebuild (held back, so not aggregated until it is published) keeps fewer than ``limit`` raw events in
        memory (and a micro-batch): the rest wait in ``folder``."""
        if not self.held_back or self.pending_rows < limit:
            return
        if self.spill is None:
            self.spill = Spill(folder / f"partition-{self.partition}")
        self.spill.write(self.pending)
        self.pending, self.pending_rows = [], 0

    def settle(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Aggregate the pending events into the open segment."""
        settle_all([self], connection)

    @property
    def held_back(self) -> bool:
        """A rebuild not yet back where it was published: not published until it is (``hold_until``)."""
        return self.next_offset < self.hold_until

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
        self.published_to = min(self.published_to, offset)
        self.segments = [s for s in self.segments if s.end <= offset]
        self.open_rows, self.open_ids, self.pending, self.pending_rows = {}, [], [], 0
        self.discard_spill()
        self.leans_on = set()
        self.last_open_folder = None
        self.epoch += 1

    def discard_spill(self) -> None:
        if self.spill is not None:
            self.spill.discard()

    def listed_segments(self) -> list[Segment]:
        """Sealed segments a snapshot lists: the retained ones and those still in their grace period."""
        return sorted([p.segment for p in self.pruning] + self.segments, key=lambda s: s.start)


BY_PARTITION = ("kafka_partition",)

# settle_all runs its queries with execute, not sql: sql binds a query twice (once to describe the relation,
# once to run it), which at micro-batch sizes costs more than the aggregate (settle_all ~30 % cheaper); the
# copy DuckDB warns about is of a few hundred result rows
warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning, __name__)


def settle_all(states: Iterable[PartitionState], connection: duckdb.DuckDBPyConnection) -> None:
    """Aggregate every partition's pending events into its open segment: one pass per view for all.

    Micro-batches are aggregated in DuckDB over Arrow and merged with the open rows by the views'
    merge rules, grouped by partition; a query per view, not per view and partition, keeps the
    cost of a publish flat in the number of partitions a worker owns.
    """
    states = list(states)
    for state in states:
        if state.spill is not None and state.spill.files:
            in_memory = state.pending
            for chunk in state.spill.drain():  # a file at a time, so a rebuild's events never all meet in memory
                state.pending = [chunk]
                _aggregate([state], connection)
            state.pending = in_memory
    _aggregate([state for state in states if state.pending], connection)


def _aggregate(busy: list[PartitionState], connection: duckdb.DuckDBPyConnection) -> None:
    if not busy:
        return
    events = pa.concat_tables([table for state in busy for table in state.pending])
    for state in busy:
        state.pending, state.pending_rows = [], 0
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
            query = view.merge_sql(f"{partial} AS parts", by=BY_PARTITION)
            merged = cast(pa.Table, connection.execute(query).to_arrow_table())  # a SELECT: never None
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
