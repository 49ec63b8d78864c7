"""The master dataset: an append-only Delta table of valid events with their Kafka coordinates.

How far the lake is complete is part of the table itself: each commit carries, as Delta
application transactions (``txn`` actions), the next Kafka offset of every partition it covers.
Rows and offsets land in one atomic commit, so a sink that dies at any instant resumes from
exactly what the table holds.

delta-rs does not reject a commit whose txn ids were advanced by someone else, so ``append``
does it: it checks the expected offsets against the snapshot it commits on, and commits with
no automatic retry, so the commit fails if anything was committed after that snapshot. That
compare-and-swap fences off a sink that lost its partitions in a rebalance but still writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import CommitProperties, Transaction

from lambda_contracts.columns import LAKE_PARTITION_COLUMNS, LAKE_SCHEMA

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 50


class FencedError(RuntimeError):
    """Another writer advanced these partitions; the caller's buffered rows for them are stale."""

    def __init__(self, partitions: dict[int, int]) -> None:
        super().__init__(f"partitions advanced by another writer: {partitions}")
        self.partitions = partitions
        """Partition -> the next offset the lake now holds."""


@dataclass(frozen=True)
class LakeProgress:
    """How far the lake is complete: everything below ``offsets[p]`` of each partition is in it."""

    version: int
    offsets: dict[int, int]
    rows: int


class LakeLayoutError(RuntimeError):
    """The table on disk was made by a version with another layout; the message says what to do."""


def app_id(topic: str, partition: int) -> str:
    """The Delta application-transaction id under which a partition's offset is recorded."""
    return f"lake-sink/{topic}/{partition}"


class Lake:
    """Read and append to the lake table for one topic."""

    def __init__(self, path: Path, topic: str) -> None:
        self.path = path
        self.topic = topic

    def table(self) -> DeltaTable | None:
        """The latest snapshot, or None before the first commit."""
        try:
            return DeltaTable(str(self.path))
        except TableNotFoundError:
            return None

    def ensure_table(self) -> DeltaTable:
        """Create the empty table on first use, so every append is a compare-and-swap on a snapshot."""
        table = self.table()
        if table is not None and table.metadata().partition_columns != LAKE_PARTITION_COLUMNS:
            raise LakeLayoutError(
                f"the lake at {self.path} is partitioned by {table.metadata().partition_columns}, this version "
                f"by {LAKE_PARTITION_COLUMNS}: start on a fresh LAMBDA_DATA_DIR (or move the old one away)"
            )
        if table is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            DeltaTable.create(
                str(self.path), LAKE_SCHEMA, partition_by=LAKE_PARTITION_COLUMNS, mode="ignore", name="events"
            )
            table = self.table()
        assert table is not None
        return table

    def committed_offsets(self, partitions: Iterable[int], table: DeltaTable | None = None) -> dict[int, int]:
        """Per partition, the next offset to consume: everything below it is in the lake."""
        snapshot = table if table is not None else self.table()
        offsets = {}
        for partition in partitions:
            version = snapshot.transaction_version(app_id(self.topic, partition)) if snapshot else None
            offsets[partition] = version if version is not None else 0
        return offsets

    def progress(self, partitions: Iterable[int]) -> LakeProgress | None:
        """The latest version, the committed offset per partition and the row count; None before any commit."""
        table = self.table()
        if table is None:
            return None
        rows = pa.table(table.get_add_actions(flatten=True)).column("num_records")
        return LakeProgress(table.version(), self.committed_offsets(partitions, table), int(pc.sum(rows).as_py() or 0))

    def files_with_offsets(self, table: DeltaTable, ranges: Mapping[int, tuple[int, int]]) -> list[str]:
        """The data files that may hold records with offsets in ``ranges`` (partition -> [start, end)).

        Read from the Delta log's per-file statistics: each file holds one Kafka partition, so its
        offset range is exact and a run reads only the files its new records are in.
        """
        actions = pa.table(table.get_add_actions(flatten=True))
        partitions = actions.column("partition.kafka_partition").to_pylist()
        lows = actions.column("min.kafka_offset").to_pylist()
        highs = actions.column("max.kafka_offset").to_pylist()
        paths = actions.column("path").to_pylist()
        chosen = []
        for path, partition, low, high in zip(paths, partitions, lows, highs, strict=True):
            start, end = ranges.get(partition, (0, 0))
            if start < end and (low is None or high is None or (low < end and high >= start)):
                chosen.append(str(self.path.resolve() / path))
        return chosen

    def days(self, table: DeltaTable) -> list[str]:
        """Every event day the lake has (from partition values in the log, no data scanned)."""
        return sorted({str(values["event_date"]) for values in table.partitions() if values.get("event_date")})

    def files_of_days(self, table: DeltaTable, days: Iterable[str]) -> list[str]:
        """Every data file of these event days (``YYYY-MM-DD``)."""
        wanted = set(days)
        actions = pa.table(table.get_add_actions(flatten=True))
        dates = actions.column("partition.event_date").to_pylist()
        paths = actions.column("path").to_pylist()
        return [str(self.path.resolve() / p) for p, d in zip(paths, dates, strict=True) if d.isoformat() in wanted]

    def append(self, rows: pa.Table, expected: Mapping[int, int], next_offsets: Mapping[int, int]) -> int:
        """Commit ``rows`` and advance each partition from ``expected`` to ``next_offsets``, atomically.

        Returns the new table version. Raises ``FencedError`` if a partition is no longer at its
        expected offset (another writer owns it now).
        """
        if rows.schema != LAKE_SCHEMA:
            raise ValueError(f"lake rows must have the lake schema, got {rows.schema}")
        transactions = [Transaction(app_id(self.topic, p), offset) for p, offset in sorted(next_offsets.items())]
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            table = self.ensure_table()
            current = self.committed_offsets(expected, table)
            moved = {p: current[p] for p in expected if current[p] != expected[p]}
            if moved:
                raise FencedError(moved)
            try:
                write_deltalake(
                    table,
                    rows,
                    mode="append",
                    partition_by=LAKE_PARTITION_COLUMNS,
                    commit_properties=CommitProperties(app_transactions=transactions, max_commit_retries=0),
                )
            except CommitFailedError:
                log.debug("lake commit raced another commit (attempt %d); re-checking offsets", attempt)
                continue
            committed = self.table()
            assert committed is not None
            return committed.version()
        raise RuntimeError(f"could not commit to the lake at {self.path} after {MAX_COMMIT_ATTEMPTS} attempts")
