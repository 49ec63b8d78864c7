"""What the speed layer publishes per Kafka partition, and how readers find it.

Layout under ``<data_dir>/views/speed/p<partition>``::

    CURRENT                         the published snapshot sequence number (replaced atomically)
    snapshots/000000000042.json     one immutable snapshot per publish
    segments/<start>-<end>-<seq>/   one folder per written segment: a Parquet file per view
                                    and ids.parquet (the event ids first seen in it)

A snapshot says: the segments listed hold partial view rows for exactly the valid events of this
partition with offsets in their ``[start, end)`` ranges, each event counted in the segment where
its first copy lies. Segments are written once; a newer snapshot lists newer files. Batch cutoffs
are chosen on segment boundaries, so "speed rows from segments starting at or after C" is exact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CURRENT = "CURRENT"


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
    dedup_folders: list[str] = field(default_factory=list)
    """Folders of pruned segments whose ids still guard against late redeliveries."""

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
        data["segments"] = [Segment(**{**s, "views": tuple(s["views"])}) for s in data["segments"]]
        return cls(**data)


def partition_root(speed_root: Path, partition: int) -> Path:
    return speed_root / f"p{partition}"


def snapshot_path(speed_root: Path, partition: int, sequence: int) -> Path:
    return partition_root(speed_root, partition) / "snapshots" / f"{sequence:012d}.json"


def read_snapshot(speed_root: Path, partition: int) -> PartitionSnapshot | None:
    """The partition's published snapshot, or None if the speed layer never published it."""
    root = partition_root(speed_root, partition)
    try:
        sequence = int((root / CURRENT).read_text().strip())
    except FileNotFoundError:
        return None
    return PartitionSnapshot.from_json(snapshot_path(speed_root, partition, sequence).read_text())
