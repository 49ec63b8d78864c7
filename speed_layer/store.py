"""Writing and reading the speed layer's published state for a partition.

A publish writes the open segment's rows to a new folder, then a new snapshot file, then swaps
CURRENT, each by write-then-rename. A per-partition file lock plus a check that CURRENT is still
the sequence this worker last published fences off a worker that lost the partition.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lambda_contracts.plumbing.files import folder_lock, write_atomically
from lambda_contracts.speed_snapshot import (
    CURRENT,
    SWITCH_LOCK,
    PartitionSnapshot,
    Segment,
    current_sequence,
    partition_root,
    read_snapshot,
    snapshot_path,
)
from lambda_contracts.views import VIEW_NAMES, VIEWS_BY_NAME
from speed_layer.state import ID_SCHEMA, PartitionState

log = logging.getLogger(__name__)

KEEP_SNAPSHOTS = 20
"""Older snapshot files go: a reader opens the one CURRENT names right after reading it."""
IDS_GLOB = "ids-*.parquet"
"""A segment folder's event ids: one file per publish that added some (earlier ones hard-linked)."""


class LostPartitionError(RuntimeError):
    """Another worker published this partition since we did: our state is stale."""


def publish(state: PartitionState, speed_root: Path, seal: bool) -> PartitionSnapshot:
    """Publish the partition's state; with ``seal`` the open segment becomes immutable."""
    if state.pending or (state.spill is not None and state.spill.files):
        raise RuntimeError("settle the partition state before publishing it: pending events would be lost")
    root = partition_root(speed_root, state.partition)
    with folder_lock(root):
        if current_sequence(speed_root, state.partition) != state.sequence:
            raise LostPartitionError(f"partition {state.partition} was published by another worker")
        sequence = state.sequence + 1
        segments = state.listed_segments()
        open_segment = None
        try:
            if not state.open_segment_empty:
                open_segment = _write_segment(root, state, sequence, sealed=seal)
                segments.append(open_segment)
            snapshot = _write_snapshot(speed_root, state, sequence, segments)
        except BaseException:  # a full disk, say: no snapshot names this attempt's folder, so it goes
            if current_sequence(speed_root, state.partition) != sequence:
                shutil.rmtree(root / _segment_folder(state, sequence), ignore_errors=True)
            raise
        snapshot_path(speed_root, state.partition, sequence - KEEP_SNAPSHOTS).unlink(missing_ok=True)
    state.sequence = sequence
    state.published_to = state.next_offset
    state.changed = False
    state.open_ids = []  # written: the next publish links them
    if open_segment is not None:
        if seal:
            state.sealed(open_segment)
        else:
            state.last_open_folder = open_segment.folder
    return snapshot


def _write_snapshot(
    speed_root: Path, state: PartitionState, sequence: int, segments: list[Segment]
) -> PartitionSnapshot:
    """The snapshot file, then CURRENT: from the rename of CURRENT on, readers see this publish."""
    snapshot = PartitionSnapshot(
        partition=state.partition,
        sequence=sequence,
        next_offset=state.next_offset,
        segments=segments,
        published_at=datetime.now(UTC).isoformat(),
        cutoff=state.cutoff,
        reconciled=state.reconciled,
        valid_from=state.valid_from,
        epoch=state.epoch,
        views=VIEW_NAMES,
    )
    write_atomically(snapshot_path(speed_root, state.partition, sequence), snapshot.to_json())
    with folder_lock(speed_root, SWITCH_LOCK):  # readers of all partitions wait for this rename only
        write_atomically(partition_root(speed_root, state.partition) / CURRENT, f"{sequence}\n")
    return snapshot


def _segment_folder(state: PartitionState, sequence: int) -> str:
    return f"segments/{state.open_start}-{state.next_offset}-{sequence}"


def _write_segment(root: Path, state: PartitionState, sequence: int, sealed: bool) -> Segment:
    folder = _segment_folder(state, sequence)
    target = root / folder
    # a worker killed inside a publish of this very folder (same offsets, same sequence: CURRENT never
    # named it, so no reader does) left files that must not count here: a torn ids file, or ids it
    # counted that this attempt did not
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    views = []
    for name, rows in sorted(state.open_rows.items()):
        if rows.num_rows == 0:
            continue
        tagged = rows.append_column("kafka_partition", pa.array([state.partition] * rows.num_rows, pa.int32()))
        tagged = tagged.append_column("segment_start", pa.array([state.open_start] * rows.num_rows, pa.int64()))
        pq.write_table(tagged, target / f"{name}.parquet")
        views.append(name)
    earlier = sorted((root / state.last_open_folder).glob(IDS_GLOB)) if state.last_open_folder else []
    if sealed and earlier:  # a sealed segment keeps its ids in one file, whatever the publishes that made it
        chunks = [pq.read_table(path, schema=ID_SCHEMA) for path in earlier] + state.open_ids
        pq.write_table(pa.concat_tables(chunks), target / f"ids-{sequence}.parquet")
    else:
        for path in earlier:  # published before: linked, not rewritten
            os.link(path, target / path.name)
        if state.open_ids:
            pq.write_table(pa.concat_tables(state.open_ids), target / f"ids-{sequence}.parquet")
    return Segment(state.open_start, state.next_offset, folder, tuple(views), sealed=sealed)


def segment_ids(folder: Path) -> pa.Table:
    """The ids (and offsets) a segment folder counted, in ``ID_SCHEMA``."""
    tables = [pq.read_table(path, schema=ID_SCHEMA) for path in sorted(folder.glob(IDS_GLOB))]
    return pa.concat_tables([ID_SCHEMA.empty_table(), *tables])


def restore(speed_root: Path, partition: int, cutoff: int) -> PartitionState | None:
    """The state a crashed or previous owner published, or None if nothing was published."""
    snapshot = read_snapshot(speed_root, partition)
    if snapshot is None:
        return None
    root = partition_root(speed_root, partition)
    sealed = [s for s in snapshot.segments if s.sealed]
    unsealed = [s for s in snapshot.segments if not s.sealed]
    state = PartitionState(
        partition=partition,
        open_start=unsealed[0].start if unsealed else snapshot.next_offset,
        next_offset=snapshot.next_offset,
        cutoff=max(cutoff, snapshot.cutoff),
        sequence=snapshot.sequence,
        published_to=snapshot.next_offset,
        segments=sealed,
        reconciled=snapshot.reconciled,
        valid_from=snapshot.valid_from,
        epoch=snapshot.epoch,
    )
    if unsealed:
        segment = unsealed[0]
        state.last_open_folder = segment.folder
        for name in segment.views:
            if name not in VIEWS_BY_NAME:
                continue  # a view no longer declared: nothing reads its rows any more
            rows = pq.read_table(root / segment.folder / f"{name}.parquet")
            keep = [*VIEWS_BY_NAME[name].key_columns, *VIEWS_BY_NAME[name].measure_columns]
            state.open_rows[name] = rows.select(keep)
        state.changed = False
    state.missing_views = tuple(name for name in VIEW_NAMES if not snapshot.holds(name))
    log.info(
        "speed partition %d restored at offset %d (snapshot %d)", partition, snapshot.next_offset, snapshot.sequence
    )
    return state


def counted_ids(speed_root: Path, state: PartitionState) -> pa.Table:
    """The ids a restored partition counted from its cutoff on (what its new owner must know)."""
    root = partition_root(speed_root, state.partition)
    folders = [s.folder for s in state.segments if s.end > state.cutoff]
    if state.last_open_folder is not None:
        folders.append(state.last_open_folder)
    table = pa.concat_tables([ID_SCHEMA.empty_table(), *(segment_ids(root / f) for f in folders)])
    return table.filter(pc.greater_equal(table.column("kafka_offset"), state.cutoff))
