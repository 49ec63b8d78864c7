"""What is already counted, so the speed layer counts each ``event_id`` once wherever its copies land.

Two sources, both exact (``plumbing.event_ids.IdSet``, 16 bytes an id):

- **the speed layer's own**: ids counted in retained segments, by this worker and, read from what
  they publish, by every other worker (``tail``), whatever the partition. Publishes are serialised by
  one lock across workers and each worker reads the others' new ids before it publishes, so of two
  copies counted at once on two partitions the first one published wins; the other is dropped before
  it is ever aggregated (``SpeedWorker._publish``). A copy is dropped only in favour of a count that is
  published, one in its own partition (published together), or one on another partition of this
  worker that it publishes first (``Claim.leaned_on``); when no such order works (the two partitions
  lean on each other), the partition waits at the copy (``Claim.stopped_at``). So every published
  snapshot stands on published ones alone, whatever is lost or killed next.
- **the batch layer's**: the ids a batch version counted below its cutoff (``BatchIds``, from the
  manifest's id index, per period of event time). Copies share their event time, so an event can
  have a copy below the cutoff only if its time is no later than the version's creation (plus the
  producers' clock skew); only those are looked up, in their own period.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lambda_contracts.manifest import EMPTY, Manifest
from lambda_contracts.plumbing.event_ids import IdSet, Words, first_occurrences, id_words
from lambda_contracts.speed_snapshot import PartitionSnapshot, partition_root

log = logging.getLogger(__name__)

Tags = npt.NDArray[np.int32]
Offsets = npt.NDArray[np.int64]


class BatchIds:
    """The ids one batch version counted below its cutoff, loaded per period as events need them."""

    def __init__(self, root: Path, skew: timedelta, keep_periods: int = 48, folder: Path | None = None) -> None:
        self.root = root
        self.skew = skew
        self.keep_periods = keep_periods
        self.folder = folder
        """Where periods loaded from now on keep their ids, mapped (``IdSet``); ``None``: in memory."""
        self.manifest: Manifest = EMPTY
        self._periods: OrderedDict[str, tuple[IdSet, set[str]]] = OrderedDict()

    def use(self, manifest: Manifest, added: Callable[[IdSet], None] | None = None) -> None:
        """Move to ``manifest``; ``added`` is given every id in files the previous version did not list (new
        ids, and ids a compaction rewrote), ``ID_READ_ROWS`` at a time, each file read once.

        Loaded periods take those ids. A version whose cutoffs did not go back counted every id the
        previous one did (the lake is append-only), so a period whose files a compaction or a recompute
        rewrote keeps its set and adds only the ids it lacks; otherwise it is loaded again when needed.
        """
        previous, self.manifest = self.manifest, manifest
        grows = all(manifest.cutoffs.get(p, 0) >= cutoff for p, cutoff in previous.cutoffs.items())
        for period in [p for p in self._periods if p not in manifest.ids]:
            del self._periods[period]  # compacted into its day, say: never looked up again
        for period, listed in manifest.ids.items():
            files = set(listed)
            loaded = self._periods.get(period)
            if loaded is not None and not loaded[1] <= files and not grows:
                del self._periods[period]
                loaded = None
            for file in sorted(files - set(previous.ids.get(period, []))):
                for batch in _id_batches(self.root / file):
                    high, low = id_words(batch)  # parsed once for the check and the loaded period
                    if added is not None:
                        chunk = IdSet(positions=False)
                        chunk.add_words(high, low)
                        added(chunk)
                    if loaded is not None:
                        lacking = ~loaded[0].contains_words(high, low)
                        loaded[0].add_words(high[lacking], low[lacking])
            if loaded is not None:
                self._periods[period] = (loaded[0], files)
        _give_back_read_buffers()

    def counted(self, events: pa.Table) -> npt.NDArray[np.bool_]:
        """For each event, whether this version counted its id below the cutoff."""
        found = np.zeros(events.num_rows, dtype=np.bool_)
        if not self.manifest.ids or not events.num_rows:
            return found
        horizon = datetime.fromisoformat(self.manifest.created_at) + self.skew
        times = events.column("event_time")
        candidates = pc.less_equal(times, pa.scalar(horizon, times.type))
        if not pc.any(candidates).as_py():
            return found
        hours = pc.strftime(times, format="%Y-%m-%dT%H", locale="C").to_numpy(zero_copy_only=False)
        mask = candidates.to_numpy(zero_copy_only=False)
        ids = events.column("event_id")
        for hour in np.unique(hours[mask]):
            rows = mask & (hours == hour)
            period = self.manifest.period_of(str(hour))
            if period in self.manifest.ids:
                found[rows] = self._period(period).contains(ids.filter(pa.array(rows)))
        return found

    def _period(self, period: str) -> IdSet:
        if period not in self._periods:
            files = self.manifest.ids.get(period, [])
            ids = IdSet(positions=False, folder=self.folder)
            for file in files:
                _add_ids(ids, self.root / file)
            _give_back_read_buffers()
            self._periods[period] = (ids, set(files))
            while len(self._periods) > self.keep_periods:
                self._periods.popitem(last=False)
        self._periods.move_to_end(period)
        return self._periods[period][0]


ID_READ_ROWS = 1_000_000
"""Ids read from a batch file at once: a compacted period's file holds an hour of events or a day
(read whole, 10 million ids took ~1 GiB as text and words before they were 160 MiB in the set)."""


def _id_batches(path: Path) -> Iterator[pa.Array]:
    # pre-buffered (the default), the reader kept the whole file's pages until the last batch: 378 MiB of
    # Arrow memory for a file of 10 million ids; streamed through a 1 MiB buffer it stays at ~44
    ids = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    for batch in ids.iter_batches(batch_size=ID_READ_ROWS, columns=["event_id"]):
        yield batch.column(0)


def _give_back_read_buffers() -> None:
    # Arrow's allocator keeps what reading freed (~270 MiB after a period of 10 million ids); the index
    # itself is mapped or compact, so return that memory rather than carry it to the next load
    pa.default_memory_pool().release_unused()


def _add_ids(ids: IdSet, path: Path) -> None:
    for batch in _id_batches(path):
        ids.add(batch)


@dataclass(frozen=True)
class Claim:
    """What ``Counted.claim`` let through, and where the partition must wait, if it must."""

    rows: pa.Table
    """First copies nobody counted: count them."""
    stopped_at: int | None
    """The offset of a copy of an own count not yet published on another partition: nothing from there on
    was looked at; read it again once that count is published (``None``: every row was decided)."""
    leaned_on: frozenset[int] = frozenset()
    """Own partitions whose unpublished counts copies were dropped for: they must be published first."""


class Counted:
    """The dedup authority of one speed worker: the speed layer's counted ids and the batch's."""

    def __init__(self, batch: BatchIds) -> None:
        self.speed = IdSet()
        self.batch = batch
        self._tailed: dict[int, tuple[int, int]] = {}
        """Other partitions: (epoch, offset up to which their published ids are loaded)."""

    def claim(
        self,
        partition: int,
        events: pa.Table,
        unpublished_from: Mapping[int, int] | None = None,
        may_lean_on: frozenset[int] = frozenset(),
    ) -> Claim:
        """The events of ``partition`` to count: first copies whose id nobody counted yet, claimed for it.

        A copy is dropped only in favour of a count readers can already see (published by any worker,
        or held from before a rebuild), of an earlier one in the same partition (published with it), or
        of one in a partition of ``may_lean_on``, which the worker publishes before this one
        (``Claim.leaned_on``). If the only count is this worker's own, on another partition and not yet
        published (``unpublished_from``: own partition -> offset its unpublished counts start at), and
        not one it may lean on, nothing is taken from that copy on: the partition waits there until
        the count is published, so no publish of ``partition`` ever leans on one that might not happen
        (a rebalance, a crash).
        """
        if not events.num_rows:
            return Claim(events, None)
        waiting_on = {p: start for p, start in (unpublished_from or {}).items() if p != partition}
        held = held_tag(partition)

        def unpublished(tags: Tags, offsets: Offsets) -> npt.NDArray[np.bool_]:
            found = np.zeros(len(tags), dtype=np.bool_)
            for other, start in waiting_on.items():
                found |= (tags == other) & (offsets >= start)
            return found

        def visible(tags: Tags, offsets: Offsets) -> npt.NDArray[np.bool_]:
            seen: npt.NDArray[np.bool_] = (tags != held) & ~unpublished(tags, offsets)
            return seen  # its own old copies (held during a rebuild) do not block it

        ids = events.column("event_id")
        high, low = id_words(ids)
        counted, not_visible = self.speed.classify_words(high, low, where=visible)
        keep = first_occurrences(high, low) & ~counted & ~self.batch.counted(events)
        stopped_at = None
        leaned: set[int] = set()
        candidates = not_visible & keep if waiting_on else not_visible[:0]
        if candidates.any():  # own held copies are not visible either: tell them apart
            waits = np.zeros(len(keep), dtype=np.bool_)  # only the candidates are looked up again
            waits[candidates] = self.speed.contains_words(high[candidates], low[candidates], where=unpublished)
            leans = {
                other: self._counted_on(other, start, high, low, waits)
                for other, start in waiting_on.items()
                if other in may_lean_on
            }
            leans = {other: rows for other, rows in leans.items() if rows.any()}
            lean_rows = np.logical_or.reduce(list(leans.values())) if leans else np.zeros_like(waits)
            hard = waits & ~lean_rows
            end = int(np.argmax(hard)) if hard.any() else len(keep)  # rows are in offset order
            if end < len(keep):
                stopped_at = int(events.column("kafka_offset")[end].as_py())
                keep[end:] = False
            keep[:end] &= ~lean_rows[:end]
            leaned = {other for other, rows in leans.items() if rows[:end].any()}
        offsets = events.column("kafka_offset").to_numpy()
        if keep.all():
            self.speed.add_words(high, low, partition, offsets)
            return Claim(events, stopped_at, frozenset(leaned))
        fresh = events.filter(pa.array(keep))
        self.speed.add_words(high[keep], low[keep], partition, offsets[keep])
        return Claim(fresh, stopped_at, frozenset(leaned))

    def _counted_on(
        self, other: int, start: int, high: Words, low: Words, rows: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """Which of ``rows`` partition ``other`` counted from ``start`` on (its unpublished counts)."""
        found = np.zeros(len(rows), dtype=np.bool_)
        if rows.any():
            found[rows] = self.speed.contains_words(
                high[rows], low[rows], where=lambda tags, offsets: (tags == other) & (offsets >= start)
            )
        return found

    def tail(self, speed_root: Path, snapshot: PartitionSnapshot) -> IdSet:
        """Load the ids another worker published for its partition since we last looked; returns them."""
        partition = snapshot.partition
        epoch, loaded_to = self._tailed.get(partition, (-1, 0))
        if snapshot.epoch != epoch:  # it rebuilt the partition: what it counted before may be gone
            self.speed.drop(partition)
            loaded_to = 0
        self.speed.drop(partition, below=snapshot.cutoff)
        new = IdSet(positions=False)
        root = partition_root(speed_root, partition)
        for segment in snapshot.segments:
            if segment.end <= max(loaded_to, snapshot.cutoff):
                continue
            for path in sorted((root / segment.folder).glob("ids-*.parquet")):
                table = pq.read_table(path)
                offsets = table.column("kafka_offset")
                table = table.filter(pc.greater_equal(offsets, max(loaded_to, snapshot.cutoff)))
                if table.num_rows:
                    ids, at = table.column("event_id"), table.column("kafka_offset").to_numpy()
                    self.speed.add(ids, partition, at)
                    new.add(ids)
        self._tailed[partition] = (snapshot.epoch, max(loaded_to, snapshot.next_offset))
        return new

    def dropped(self, partition: int, ids: IdSet, unpublished_from: int) -> None:
        """``partition`` dropped its unpublished counts of ``ids`` (another worker published them first): they
        are counts no more, so they must not block a copy anywhere. Left behind, they blocked the copies that
        other worker had counted once this one took that partition over and rebuilt it: counted nowhere."""
        self.speed.drop_ids(partition, ids, from_offset=unpublished_from)

    def drop_below(self, cutoffs: dict[int, int]) -> None:
        """The batch counts what lies below its cutoffs now: the speed layer's copies of it go."""
        for partition, cutoff in cutoffs.items():
            self.speed.drop(partition, below=cutoff)
            self.speed.drop(held_tag(partition), below=cutoff)

    def hold(self, partition: int, from_offset: int) -> None:
        """``partition`` rebuilds from ``from_offset``, but readers still see what it published: those ids
        keep blocking copies on other partitions (not on its own) until the rebuilt state is published."""
        self.speed.retag(partition, from_offset, held_tag(partition))

    def release(self, partition: int) -> None:
        """The rebuilt state of ``partition`` is published: what it published before no longer counts."""
        self.speed.drop(held_tag(partition))

    def forget_tailed(self, partition: int) -> None:
        """We own ``partition`` now, or lost it: its ids come from its own state, or from what it publishes."""
        self.speed.drop(partition)
        self.speed.drop(held_tag(partition))
        self._tailed.pop(partition, None)


def held_tag(partition: int) -> int:
    """The tag of ids ``partition`` published before a rebuild that is not published yet."""
    return -2 - partition
