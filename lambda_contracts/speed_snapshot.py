"""What the speed layer publishes per Kafka partition, and how readers find it.

Layout under ``<data_dir>/views/speed/p<partition>``::

    CURRENT                         the published snapshot sequence number (replaced atomically)
    snapshots/000000000042.json     one immutable snapshot per publish
    segments/<start>-<end>-<seq>/   one folder per written segment: a Parquet file per view
                                    and ids-<seq>.parquet (the event ids it counted, 16 bytes each)

A snapshot says: the segments listed hold partial view rows for exactly the events of this partition
with offsets in their ``[start, end)`` ranges that the speed layer counts: each ``event_id`` once
over every partition and the batch version it reconciled (a copy counted elsewhere, in the speed
layer or below that version's cutoff, is not counted here). Segments are written once; a newer
snapshot lists newer files. Batch cutoffs are chosen on segment boundaries, so "speed rows from
segments starting at or after C" is exact when used with a batch version in
``[valid_from, reconciled]``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lambda_contracts.views import FIRST_VIEWS

CURRENT = "CURRENT"
SWITCH_LOCK = ".switch.lock"
"""In the speed root: a publisher holds it exclusively while it makes a partition's snapshot current, and a
reader shares it while it reads every partition's, so a read never straddles two publishes."""


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    folder: str
    """Relative to the partition's folder; holds ``<view>.parquet`` for views with rows."""
    views: tuple[str, ...] = ()
    sealed: bool = True


@dataclass(frozen=True)
class PartitionSnapshot:
    partition: int
    sequence: int
    next_offset: int
    """Everything this partition's segments reflect lies below this offset."""
    segments: list[Segment]
    published_at: str
    cutoff: int
    """The batch cutoff the worker had applied when it published."""
    reconciled: int = 0
    """The newest batch version whose counted ids this state was checked against."""
    valid_from: int = 0
    """The oldest batch version these rows may be merged with (a rebuild for a version moves it up)."""
    epoch: int = 0
    """Counts the times the partition was rebuilt or jumped, so readers of its ids start over."""
    views: tuple[str, ...] | None = None
    """The views the worker computed (None: written before snapshots listed them, so ``FIRST_VIEWS``).
    A worker that restores a snapshot without a declared view rebuilds the partition from its cutoff."""

    def holds(self, view: str) -> bool:
        """Whether the segments have this view's rows (a segment without its file had no such events)."""
        return view in (FIRST_VIEWS if self.views is None else self.views)

    def usable_with(self, version: int) -> bool:
        """Whether these rows may be merged with batch version ``version`` (each event once)."""
        return self.valid_from <= version <= self.reconciled

    def boundaries(self) -> set[int]:
        """Offsets where a batch cutoff can fall without splitting a segment."""
        sealed = [s for s in self.segments if s.sealed]
        return {s.start for s in sealed} | {s.end for s in sealed}

    def covers_from(self, cutoff: int) -> bool:
        """True if the segments form one contiguous run from ``cutoff`` to ``next_offset``."""
        position = cutoff
        for segment in sorted(self.segments, key=lambda s: s.start):
            if segment.end <= cutoff:
                continue
            if segment.start != position:
                return False
            position = segment.end
        return position == self.next_offset or (position == cutoff and self.next_offset <= cutoff)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PartitionSnapshot:
        data = json.loads(text)
        data.pop("dedup_folders", None)
        data["segments"] = [Segment(**{**s, "views": tuple(s["views"])}) for s in data["segments"]]
        if data.get("views") is not None:
            data["views"] = tuple(data["views"])
        return cls(**data)


def partition_root(speed_root: Path, partition: int) -> Path:
    return speed_root / f"p{partition}"


def snapshot_path(speed_root: Path, partition: int, sequence: int) -> Path:
    return partition_root(speed_root, partition) / "snapshots" / f"{sequence:012d}.json"


def current_sequence(speed_root: Path, partition: int) -> int:
    """The sequence of the partition's current snapshot (0: never published)."""
    try:
        return int((partition_root(speed_root, partition) / CURRENT).read_text().strip())
    except FileNotFoundError:
        return 0


def read_snapshot(speed_root: Path, partition: int) -> PartitionSnapshot | None:
    """The partition's published snapshot, or None if the speed layer never published it."""
    sequence = current_sequence(speed_root, partition)
    if not sequence:
        return None
    return PartitionSnapshot.from_json(snapshot_path(speed_root, partition, sequence).read_text())
