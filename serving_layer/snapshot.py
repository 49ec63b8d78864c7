"""One consistent view of what the batch and speed layers have published.

Resolution reads each partition's speed snapshot and a batch manifest (version, cutoffs ``C``,
files): the current one, or the previous one for the moment it takes the live speed workers to
reconcile with a new version (under a second), so the merged views stay fresh across a batch
publish. Speed rows of partition ``p`` are used only if its snapshot may be merged with that version
(``usable_with``: each event once across partitions and layers) and its segments form one
contiguous run from ``C[p]``. A partition that fails this is served from the batch alone, which is
less fresh but exact for its own events; but if it published events from ``C[p]`` on, other
partitions may have dropped copies of them in favour of its counts, so then every partition is
served from the batch alone until it can be used again (a rebuild for a new batch version that
another worker has not reconciled yet; a worker killed meanwhile). Every file named here is
immutable, so a query over a resolved snapshot never mixes two versions. The partitions' snapshots
are read under the speed layer's switch lock (shared), so no partition's snapshot becomes current
while they are read: a copy dropped on one partition in favour of a count published on another is
never read without that count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from lambda_contracts.manifest import Manifest, current_version, read_manifest
from lambda_contracts.plumbing.files import folder_read_lock
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import SWITCH_LOCK, PartitionSnapshot, partition_root, read_snapshot
from lambda_contracts.view_sets import served_settings


@dataclass(frozen=True)
class ServingSnapshot:
    batch_root: Path
    speed_root: Path
    batch: Manifest
    speed: dict[int, PartitionSnapshot | None]
    resolved_at: datetime
    _file_lists: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict, compare=False, repr=False)

    def cutoff(self, partition: int) -> int:
        return self.batch.cutoffs.get(partition, 0)

    def speed_used(self, partition: int) -> bool:
        return partition in self.speed_partitions

    @cached_property
    def speed_partitions(self) -> frozenset[int]:
        """The partitions whose speed rows the merged views use: every one that may be used, unless one
        that may not has published events from its cutoff on (``stranded``): none then."""
        return frozenset() if self.stranded else self._usable_partitions

    @cached_property
    def stranded(self) -> tuple[int, ...]:
        """Partitions whose speed rows cannot be used with this version although they count events from the
        cutoff on: a copy of one of those events on another partition was dropped in favour of that count,
        so the other partitions' speed rows lack it; served without them, it would be missing."""
        return tuple(
            p
            for p, s in sorted(self.speed.items())
            if s is not None and p not in self._usable_partitions and s.next_offset > self.cutoff(p)
        )

    def speed_unused_because(self, partition: int) -> str | None:
        """Why the partition's speed rows are not merged (None: they are), for ``serving_status``."""
        snapshot = self.speed.get(partition)
        version = self.batch.version
        if snapshot is None:
            return "the speed layer has not published this partition"
        if not snapshot.usable_with(version):
            if snapshot.valid_from > version:
                return (
                    f"rebuilt for batch version {snapshot.valid_from}; readers stay on version {version} until "
                    "every live speed worker has reconciled the newer one"
                )
            return f"reconciled with batch version {snapshot.reconciled} only, not {version} (its worker is gone?)"
        if not snapshot.covers_from(self.cutoff(partition)):
            return f"its segments do not run on from the cutoff {self.cutoff(partition)}: the worker rebuilds it"
        if self.stranded:
            return (
                f"partition(s) {', '.join(map(str, self.stranded))} cannot be merged with batch version {version}, "
                "and other partitions left copies to their counts: every partition is served from the batch alone"
            )
        return None

    @cached_property
    def _usable_partitions(self) -> frozenset[int]:
        """Partitions whose speed rows may be merged with this version, each on its own merits."""
        version = self.batch.version
        return frozenset(
            p
            for p, s in self.speed.items()
            if s is not None and s.usable_with(version) and s.covers_from(self.cutoff(p))
        )

    def reflected_offsets(self) -> dict[int, int]:
        """Per partition, the offset below which every valid event is in the merged views."""
        reflected = {}
        for partition, snapshot in self.speed.items():
            cutoff = self.cutoff(partition)
            speed = snapshot.next_offset if snapshot is not None and self.speed_used(partition) else cutoff
            reflected[partition] = max(cutoff, speed)
        return reflected

    def not_ready(self, view: str) -> str | None:
        """Why ``view`` cannot be served exactly from this snapshot yet (None: it can): a view declared since
        the batch version or a used speed snapshot was written is served once both layers hold it."""
        if not self.batch.holds(view):
            return (
                f"batch version {self.batch.version} has no rows of it yet: the next batch run "
                "(the batch_views DAG, or `lambdactl batch advance`) backfills it from the lake"
            )
        behind = [p for p, s in sorted(self.speed.items()) if s and self.speed_used(p) and not s.holds(view)]
        if behind:
            return (
                f"the speed layer has not counted it on partitions {behind} yet: a speed worker running the "
                "new declaration rebuilds them from the batch cutoff when it takes them (restart the speed workers)"
            )
        return None

    def batch_files(self, view: str) -> list[str]:
        return self._files(view)[0]

    def speed_files(self, view: str) -> list[str]:
        return self._files(view)[1]

    def _files(self, view: str) -> tuple[list[str], list[str]]:
        """The view's batch and speed files, as absolute paths built from the roots resolved once: resolving
        each file would cost a system call per folder of its path, thousands per refresh, each of which hands
        Python's lock to the serving process's client threads and waits to get it back."""
        if view not in self._file_lists:
            batch_root, speed_root = self.batch_root.resolve(), self.speed_root.resolve()
            batch = [str(batch_root / f) for f in self.batch.files(view)]  # manifests name files below the root
            speed = []
            for partition, snapshot in sorted(self.speed.items()):
                if snapshot is None or not self.speed_used(partition):
                    continue
                root = partition_root(speed_root, partition)
                speed += [
                    str(root / segment.folder / f"{view}.parquet")
                    for segment in snapshot.segments
                    if segment.start >= self.cutoff(partition) and view in segment.views
                ]
            self._file_lists[view] = (batch, speed)
        return self._file_lists[view]


def resolve(settings: Settings) -> ServingSnapshot:
    """The snapshot of the view set serving reads now (the Lambda views, or the Kappa set switched to)."""
    settings = served_settings(settings)  # the pointer is read once: one set per snapshot
    root = settings.batch_views_path
    current = current_version(root)
    with folder_read_lock(settings.speed_views_path, SWITCH_LOCK):  # no snapshot becomes current meanwhile
        speed = {p: read_snapshot(settings.speed_views_path, p) for p in range(settings.topic_partitions)}
    now = datetime.now(UTC)
    live = [
        s
        for s in speed.values()
        if s is not None
        and (now - datetime.fromisoformat(s.published_at)).total_seconds() <= settings.speed_stale_after_seconds
    ]
    version = min([current, *(s.reconciled for s in live)])
    try:
        batch = read_manifest(root, version)
    except FileNotFoundError:  # pruned long ago: the current one, with that partition served from the batch
        batch = read_manifest(root, current)
    return ServingSnapshot(root, settings.speed_views_path, batch, speed, now)
