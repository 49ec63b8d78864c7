"""The speed worker: a consumer group member that keeps partial view rows fresh within a second.

For each partition it owns it resumes from the last published snapshot (or starts at the batch
cutoff), aggregates micro-batches, publishes state and offsets atomically at least every
``speed_publish_ms`` while events flow, and seals a segment every ``speed_segment_seconds``.

**Each event once, across partitions.** ``Counted`` decides which events count: first copies whose
id neither the speed layer (any partition, any worker) nor the batch (below its cutoff) counted.
Workers publish one at a time (a lock over the speed folder) and read each other's newly published
ids first, so when two copies were counted at once on two workers, the one published first wins and
the other is dropped before it is aggregated. On one worker, a copy of a count another of its partitions
has not published yet is dropped at once, and that partition is published first (``_in_lean_order``).

**Following the batch.** On a new batch version ``V`` the worker reconciles: if ``V`` counted below its
cutoff an id this worker counts at or above it (a copy on another partition, counted by the speed
layer first), the partition is rebuilt from ``C`` (reading Kafka again; the copy is now found in the
batch's ids). Segments entirely below ``C`` stay listed for a grace period (readers of the previous
version); if ``C`` lies beyond everything it holds it jumps there; if ``C`` falls inside a segment it
rebuilds from ``C``. Snapshots say which batch versions their rows may be merged with.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaConsumer, TopicPartition

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.intake import KafkaRecord
from lambda_contracts.manifest import EMPTY, Manifest, current_version, read_manifest
from lambda_contracts.plumbing import duck
from lambda_contracts.plumbing.event_ids import IdSet
from lambda_contracts.plumbing.files import SpaceWait, folder_lock, out_of_space, private_scratch
from lambda_contracts.plumbing.kafka import new_consumer, subscribe_when_known
from lambda_contracts.plumbing.micro_batch import decode_micro_batch
from lambda_contracts.serde import WIRE
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import current_sequence, partition_root, read_snapshot
from speed_layer.counted import BatchIds, Counted
from speed_layer.state import PartitionState, Pending, settle_all
from speed_layer.store import LostPartitionError, counted_ids, publish, restore

log = logging.getLogger(__name__)

MAX_POLL_RECORDS = 20_000
POLL_TIMEOUT_MS = 100
DECODE_BATCH = 1_000
"""Decode in the background once this many records are gathered (at 10,000 events/s about every poll, so a
publish decodes only the last poll's records); at low rates, once per publish."""
FETCH_MIN_BYTES = 16 * 1024
"""At low rates the broker gathers records for up to ``speed_fetch_max_wait_ms`` before answering a fetch.
Records arrive compressed (zstd: ~60 bytes an event), so at 10,000 events/s 16 KiB take ~27 ms; 64 KiB took
longer than the wait itself, and a record fetched after a publish tick waits for the next one."""
FOLLOW_BATCH_EVERY_S = 0.2
PUBLISH_THREADS = 3
"""Partitions published at once: a partition's publish is mostly Parquet encoding and fsyncs, which release
the GIL (six partitions one after another took ~100 ms at 10,000 events/s, and a partition's events waited
for the ones before it)."""


OVERTAKEN_ON_A_FULL_DISK = (
    "had copies of events another worker published first aggregated for a publish the full disk refused: "
    "reads its open segment again"
)


@dataclass(frozen=True)
class InFlight:
    """Gathered records being decoded, and the offset range [start, end) taken per partition."""

    result: Future[tuple[pa.Table, list[DeadLetter]]]
    ranges: dict[int, tuple[int, int]]


class SpeedWorker:
    def __init__(
        self,
        settings: Settings,
        consumer: KafkaConsumer | None = None,
        until: Mapping[int, int] | None = None,
        partitions: Sequence[int] | None = None,
        served: bool = True,
    ) -> None:
        self.settings = settings
        self.partitions = tuple(partitions) if partitions is not None else None
        """Partitions this worker reads alone (one process of a parallel replay); None: the group assigns them."""
        if until is not None and self.partitions is not None:
            until = {p: until.get(p, 0) for p in self.partitions}  # the other partitions are another's share
        self.until = dict(until) if until is not None else None
        """Partition -> offset to stop at (a Kappa replay up to a given position); None: run until stopped."""
        self.served = served
        """False while nobody reads the snapshots (a Kappa replay, read once it reaches ``until``): a copy of a
        count of ours not yet published is then dropped at once, not held until that count is published. A
        crash between the two publishes loses nothing: the count's partition reads the event again and,
        the copy not being counted, counts it."""
        self.topic = settings.events_topic
        self.root = settings.speed_views_path
        self.group = settings.speed_group
        self.serde = WIRE  # every format producers may write, on one topic
        self.consumer = consumer or new_consumer(
            settings,
            self.group,
            max_poll_records=MAX_POLL_RECORDS,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=settings.speed_fetch_max_wait_ms,
        )
        self.connection = duck.connect()
        # a micro-batch is a few thousand rows: a second DuckDB thread costs more to coordinate than it saves,
        # on cores shared with the decode thread, the broker and the producers (a settle of 5,000 events 18 %
        # cheaper; one of 60,000, a catch-up's size, 20 % dearer on an idle machine, but a replay runs a
        # process per core, and `lambdactl bench replay` did not slow down)
        self.connection.execute("SET threads = 1")
        self.states: dict[int, PartitionState] = {}
        batch_ids = BatchIds(settings.batch_views_path, timedelta(seconds=settings.speed_clock_skew_seconds))
        self.counted = Counted(batch_ids)
        self.manifest: Manifest = EMPTY
        """The batch version reconciled against: its cutoffs apply, its ids are looked up."""
        self._last_publish = time.monotonic()
        self._batch_checked_at = 0.0
        self._garbage: list[tuple[float, Path]] = []
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speed-decode")
        self._writers = ThreadPoolExecutor(max_workers=PUBLISH_THREADS, thread_name_prefix="speed-publish")
        self._in_flight: InFlight | None = None
        self._pending: list[KafkaRecord] = []
        self._pending_ranges: dict[int, tuple[int, int]] = {}
        self._read_to: dict[int, int] = {}
        """Partition -> the offset up to which records were read (gathered or in flight, not yet taken)."""
        self.events_counted = 0
        self.events_rejected = 0
        self.copies_elsewhere = 0
        """Events not counted here because another partition (or the batch) counted a copy."""
        self.copies_waited = 0
        """Times a partition waited at a copy until this worker published its count on another partition."""
        self._waiting: dict[int, tuple[pa.Table, int]] = {}
        """Partition -> decoded rows from a copy of our own unpublished count on, and the offset after them."""
        self.space = SpaceWait("speed worker", self.root)
        self.first_assignment_at: float | None = None
        """When the group first gave this worker partitions (monotonic), for throughput figures."""
        self.scratch: Path | None = None
        """Where rebuilding partitions spill raw events (``speed_layer.spill``) and the batch's ids are
        mapped (``BatchIds.folder``), while ``run`` runs."""
        self.published_all_at: float | None = None
        """When ``run``'s last publish ended (monotonic, one clock for every process here): its closing follows."""

    def run(self, stop: threading.Event) -> None:
        if self.partitions is None:
            subscribe_when_known(self.consumer, self.topic)
        else:  # no group rebalances: the replay dealt the partitions out, each to one process
            self.consumer.assign([TopicPartition(self.topic, p) for p in self.partitions])
        try:
            with private_scratch(self.settings.data_dir / "scratch", "speed") as self.scratch:
                self.counted.batch.folder = self.scratch / "batch-ids"
                self._consume(stop)
        finally:
            self.scratch = self.counted.batch.folder = None
            self._decoder.shutdown(wait=True, cancel_futures=True)
            self._writers.shutdown(wait=True)
            self.consumer.close(autocommit=False)

    def _consume(self, stop: threading.Event) -> None:
        """Poll, decode, count and publish until stopped (or ``until`` is reached), then publish all."""
        while not stop.is_set() and not self.reached_until():
            if self.space.waiting:  # take nothing more while what we hold cannot be published
                self.consumer.pause(*self.consumer.assignment())
            batches = self.consumer.poll(timeout_ms=self._poll_timeout_ms())  # meanwhile a decode may run
            self._follow_batch()
            self._follow_assignment()
            self._gather(batches)
            if len(self._pending) >= DECODE_BATCH:
                self._submit()  # decoded in the background while the next poll fetches
            if self._publish_is_due():
                self._last_publish = time.monotonic()  # the cadence runs from start to start
                self._submit()
                self._take_decoded()
                self._publish(defer=frozenset(self._waiting))
                self._publish_waiting()
            self._housekeeping()
        self._submit()
        self._take_decoded()
        self._publish(force=True)
        self.published_all_at = time.monotonic()

    def reached_until(self) -> bool:
        """Whether every partition of ``until`` is counted up to its offset (never, without ``until``)."""
        if self.until is None:
            return False
        return all(p in self.states and self.states[p].next_offset >= end for p, end in self.until.items())

    # -- partitions and the batch -----------------------------------------------------------------

    def _follow_assignment(self) -> None:
        assigned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        for partition in set(self.states) - assigned:
            self._let_go(partition)  # the new owner resumes from what we published
        if assigned and self.first_assignment_at is None:
            self.first_assignment_at = time.monotonic()
        for partition in sorted(assigned - set(self.states)):
            cutoff = self.manifest.cutoffs.get(partition, 0)
            self.counted.forget_tailed(partition)
            state = restore(self.root, partition, cutoff)
            if state is None:  # published at once, so readers and probes see the partition is owned
                state = PartitionState(
                    partition, open_start=cutoff, next_offset=cutoff, cutoff=cutoff, published_to=cutoff, changed=True
                )
                state.valid_from = self.manifest.version
            else:
                ids = counted_ids(self.root, state)
                self.counted.speed.add(ids.column("event_id"), partition, ids.column("kafka_offset").to_numpy())
                if state.reconciled != self.manifest.version:
                    # checked against another batch version: its counts may clash with ours; recount from C
                    self._restart_at(
                        state,
                        cutoff,
                        f"was reconciled with batch version {state.reconciled}, not "
                        f"{self.manifest.version}: rebuilds from the cutoff",
                    )
                    state.valid_from = self.manifest.version
                elif state.missing_views:  # declared since it published: counted from the cutoff like the rest
                    self._restart_at(
                        state, cutoff, f"has no rows of {', '.join(state.missing_views)}: rebuilds from the cutoff"
                    )
                state.missing_views = ()
            state.reconciled = self.manifest.version
            state.changed = True
            self.states[partition] = state
            self._forget_reads(partition)
            self.consumer.seek(TopicPartition(self.topic, partition), state.next_offset)
            log.info("speed worker took partition %d at offset %d", partition, state.next_offset)
            self._apply_cutoff(state)

    def _follow_batch(self) -> None:
        """Reconcile with a newly published batch version, then apply its cutoffs."""
        if time.monotonic() - self._batch_checked_at < FOLLOW_BATCH_EVERY_S:
            return
        self._batch_checked_at = time.monotonic()
        batch_root = self.settings.batch_views_path
        version = current_version(batch_root)
        if version == self.manifest.version:
            return
        previous, self.manifest = self.manifest, read_manifest(batch_root, version)
        checked = self.states and version > previous.version  # at start-up there is nothing to check yet
        overlapping: set[int] = set()

        def overlaps(added: IdSet) -> None:
            for partition in set(self.states) - overlapping:
                cutoff = self.manifest.cutoffs.get(partition, 0)
                if self.counted.speed.overlaps(added, partition, from_offset=cutoff):
                    overlapping.add(partition)

        self.counted.batch.use(self.manifest, overlaps if checked else None)
        for state in self.states.values():
            cutoff = self.manifest.cutoffs.get(state.partition, 0)
            if state.partition in overlapping:
                self._restart_at(
                    state,
                    cutoff,
                    f"rebuilds from the cutoff of batch version {version}, which "
                    "counted below it a copy of an event counted here",
                )
                state.valid_from = version
            state.reconciled = version
            state.changed = True
        self.counted.drop_below(self.manifest.cutoffs)
        for state in self.states.values():
            self._apply_cutoff(state)

    def _apply_cutoff(self, state: PartitionState) -> None:
        cutoff = self.manifest.cutoffs.get(state.partition, 0)
        if cutoff <= state.cutoff:
            return
        grace = time.monotonic() + self.settings.speed_prune_grace_seconds
        below = [s for s in state.segments if s.end <= cutoff]
        state.segments = [s for s in state.segments if s.end > cutoff]
        state.pruning.extend(Pending(grace, s) for s in below)
        state.cutoff = cutoff
        self.counted.speed.drop(state.partition, below=cutoff)  # the batch counts those now
        boundaries = {s.start for s in state.segments} | {state.open_start}
        if cutoff in boundaries:
            pass  # aligned: what remains starts exactly at the cutoff
        elif cutoff >= state.next_offset:
            self._restart_at(state, cutoff, "jumps to the batch cutoff")
        else:
            self._restart_at(state, cutoff, "rebuilds from the batch cutoff (it fell inside a segment)")
        state.changed = True

    def _let_go(self, partition: int) -> None:
        """Stop owning ``partition`` (revoked, or another worker published it): its ids are read back from what
        its owner publishes, and copies dropped for what we had not published count again."""
        self.states.pop(partition).discard_spill()
        self._forget_reads(partition)
        self.counted.forget_tailed(partition)
        self._discard_leaning_on(partition)

    def _restart_at(self, state: PartitionState, offset: int, why: str) -> None:
        log.warning("speed partition %d %s at offset %d", state.partition, why, offset)
        if offset < state.next_offset and state.sequence > 0:
            # what it counted and did not publish was never visible: it blocks no copy elsewhere from here on
            self.counted.speed.drop(state.partition, from_offset=max(offset, state.published_to))
            # readers keep what it published until the rebuild is back there; so do other partitions
            state.hold_until = max(state.hold_until, state.next_offset)
            self.counted.hold(state.partition, from_offset=offset)
        else:
            self.counted.speed.drop(state.partition, from_offset=offset)
        state.restart_at(offset)
        self._forget_reads(state.partition)
        self.consumer.seek(TopicPartition(self.topic, state.partition), offset)
        self._discard_leaning_on(state.partition)

    # -- consuming and publishing -----------------------------------------------------------------

    def _gather(self, batches: dict[TopicPartition, list[KafkaRecord]]) -> None:
        """Keep a poll's new records until a decode is worth its fixed cost (a full batch, or a publish)."""
        for tp, records in batches.items():
            state = self.states.get(tp.partition)
            if state is None:
                continue
            position = self._read_to.get(tp.partition, state.next_offset)
            new = [r for r in records if r.offset >= position]
            if self.until is not None:
                new = [r for r in new if r.offset < self.until.get(tp.partition, 0)]
            if not new:
                continue
            if new[0].offset > position:  # a fetch from an older position: read again from ours
                self.consumer.seek(TopicPartition(self.topic, tp.partition), position)
                continue
            self._pending.extend(new)
            start = self._pending_ranges.get(tp.partition, (position, position))[0]
            self._pending_ranges[tp.partition] = (start, new[-1].offset + 1)
            self._read_to[tp.partition] = new[-1].offset + 1

    def _submit(self) -> None:
        """Start decoding the gathered records in one vectorized pass, in the background.

        Arrow's regex and JSON reader release the GIL, so the decoding overlaps the next poll
        (kafka-python's record parsing, pure Python). ``_take_decoded`` hands over the rows.
        """
        if not self._pending:
            return
        self._take_decoded()  # one decode in flight, so partitions take their ranges in order
        future = self._decoder.submit(decode_micro_batch, self._pending, self.serde, self.group)
        self._in_flight = InFlight(future, self._pending_ranges)
        self._pending, self._pending_ranges = [], {}

    def _forget_reads(self, partition: int) -> None:
        """Records read but not taken for ``partition`` no longer count (it moved, or is gone)."""
        self._pending = [r for r in self._pending if r.partition != partition]
        self._pending_ranges.pop(partition, None)
        self._read_to.pop(partition, None)
        self._waiting.pop(partition, None)

    def _take_decoded(self) -> None:
        """Give each partition the events to count from the decode in flight (if its position did not move)."""
        if self._in_flight is None:
            return
        in_flight, self._in_flight = self._in_flight, None
        events, rejected = in_flight.result.result()
        self.events_rejected += len(rejected)  # kept in the dead-letter topic by the lake sink
        partitions = events.column("kafka_partition")
        for partition, (start, end) in in_flight.ranges.items():
            state = self.states.get(partition)
            waiting = self._waiting.get(partition)
            if state is None or (state.next_offset != start and (waiting is None or waiting[1] != start)):
                continue  # lost or moved (a cutoff) since: these records are read again where needed
            rows = events if len(in_flight.ranges) == 1 else events.filter(pc.equal(partitions, partition))
            if waiting is not None:  # behind rows that wait for a publish: they keep their order
                self._waiting[partition] = (pa.concat_tables([waiting[0], rows]), end)
                continue
            self._claim(state, rows, end)

    def _claim(self, state: PartitionState, rows: pa.Table, end: int) -> None:
        """Count what ``Counted`` lets through; rows from a copy of an unpublished count of ours wait."""
        claim = self.counted.claim(state.partition, rows, self._unpublished_from(), self._may_lean_on(state.partition))
        state.leans_on |= claim.leaned_on
        taken_to = end
        if claim.stopped_at is not None:  # waits at a copy of a count of ours not yet published
            offsets = rows.column("kafka_offset")
            self._waiting[state.partition] = (rows.filter(pc.greater_equal(offsets, claim.stopped_at)), end)
            rows = rows.filter(pc.less(offsets, claim.stopped_at))
            taken_to = claim.stopped_at
            self.copies_waited += 1
        self.copies_elsewhere += rows.num_rows - claim.rows.num_rows
        if taken_to > state.next_offset:
            self.events_counted += state.take(claim.rows, taken_to)
            if self.scratch is not None:
                self._spill_if_large(state, self.scratch)

    def _spill_if_large(self, state: PartitionState, scratch: Path) -> None:
        """A rebuild's raw events beyond the limit go to disk; with the disk full they stay in memory."""
        try:
            state.spill_if_large(scratch, self.settings.speed_rebuild_memory_events)
        except OSError as error:
            if not out_of_space(error):
                raise
            log.warning(
                "speed partition %d: no space left to keep its rebuild's events on disk under %s; "
                "they stay in memory until it publishes or space returns",
                state.partition,
                scratch,
            )

    def _publish_waiting(self) -> None:
        """Rows that waited for this publish are counted and published in further passes of it, so readers
        see them no later than without the wait. A pass can make rows wait on counts it took itself: the
        next pass publishes those (each wait is on a count taken earlier, so the passes end).

        A partition that still waits is left out of a pass (its rows before the copy go out with the rest
        in a later pass), so it is written once per publish rather than once per pass; the last pass, or
        one where no wait was resolved, publishes every changed partition."""
        passes = len(self.states)
        for number in range(passes):
            before = {p: rows.num_rows for p, (rows, _) in self._waiting.items()}
            if not before or self.space.waiting:
                return
            self._take_waiting()
            after = {p: rows.num_rows for p, (rows, _) in self._waiting.items()}
            stuck = after == before  # waiting on a partition that could not publish (a rebuild, say)
            last = stuck or number == passes - 1
            self._publish(defer=frozenset() if last else frozenset(self._waiting))
            if stuck:
                return  # the next cadence

    def _take_waiting(self) -> None:
        """Claim again the rows that waited for a publish of ours (kept decoded, not read again)."""
        for partition, (rows, end) in list(self._waiting.items()):
            del self._waiting[partition]
            state = self.states.get(partition)
            if state is not None:
                self._claim(state, rows, end)

    def _may_lean_on(self, partition: int) -> frozenset[int]:
        """Own partitions whose unpublished counts a copy on ``partition`` may be dropped for at once: they are
        published before it in the same pass. Not one rebuilding (held back), nor one that leans on
        ``partition`` itself, however indirectly (no order would put both first)."""
        if not self.served:
            return frozenset()
        return frozenset(
            other
            for other, state in self.states.items()
            if other != partition and not state.hold_until and partition not in self._leaned_on_by(other)
        )

    def _leaned_on_by(self, partition: int) -> set[int]:
        """The partitions ``partition`` leans on, directly or through others."""
        found: set[int] = set()
        todo = [partition]
        while todo:
            state = self.states.get(todo.pop())
            for other in state.leans_on - found if state is not None else ():
                found.add(other)
                todo.append(other)
        return found

    def _in_lean_order(self, publishing: set[int]) -> list[list[int]]:
        """``publishing`` and every partition it leans on, in waves: each partition after those it leans on,
        none leaning on another of its wave (so a wave's partitions may be published at once). A partition
        leaning on one that cannot be published now (rebuilding, lost: a safety net, see
        ``_discard_leaning_on``) is left out until it can be."""
        unpublishable = {p for p, s in self.states.items() if s.held_back}
        chosen: set[int] = set()
        for partition in publishing:
            leaned = self._leaned_on_by(partition)
            if not leaned & unpublishable and leaned <= set(self.states):
                chosen |= {partition} | leaned  # a deferred one goes too: deferring it only saved a write
        waves: list[list[int]] = []
        done: set[int] = set()
        while len(done) < len(chosen):
            ready = sorted(p for p in chosen - done if self.states[p].leans_on <= done)
            if not ready:
                raise RuntimeError(f"speed partitions {sorted(chosen - done)} lean on each other")
            waves.append(ready)
            done |= set(ready)
        return waves

    def _discard_leaning_on(self, partition: int) -> None:
        """``partition`` lost counts it had not published (a rebuild, a revocation): copies other partitions
        dropped for them must count again, so those partitions read again from the start of their open
        segment (readers keep what they published meanwhile)."""
        for state in list(self.states.values()):
            if partition in state.leans_on and state.partition != partition:
                self._restart_at(
                    state, state.open_start, f"dropped copies of partition {partition}'s unpublished counts, gone: it"
                )

    def _unpublished_from(self) -> dict[int, int]:
        """Own partition -> the offset from which what it counted is not published yet (none, unserved)."""
        if not self.served:
            return {}
        return {partition: state.published_to for partition, state in self.states.items()}

    def _poll_timeout_ms(self) -> int:
        """Wait for records no longer than until the next publish is due, so publishes keep their cadence."""
        if self.space.waiting:  # the disk is full: retries have their own pace
            return POLL_TIMEOUT_MS
        return max(0, min(POLL_TIMEOUT_MS, math.ceil(self._due_in_s() * 1000)))

    def _due_in_s(self) -> float:
        """Seconds until the next publish is due (negative: overdue)."""
        return self._last_publish + self.settings.speed_publish_ms / 1000 - time.monotonic()

    def _publish_is_due(self) -> bool:
        if self.space.waiting:
            return self.space.may_try()
        return self._due_in_s() <= 0

    def _publish(self, force: bool = False, defer: frozenset[int] = frozenset()) -> None:
        """Publish every changed partition but those in ``defer``, one worker at a time, first reading what
        others published."""
        with folder_lock(self.root):
            self._let_go_of_taken()
            published_elsewhere = self._tail_others()
            if len(published_elsewhere):
                self._give_way_to(published_elsewhere)
            # a rebuilding partition keeps its events pending (not aggregated) until it is published, so
            # copies another worker publishes first can still be dropped from them
            ready = {p for p, s in self.states.items() if not s.held_back and p not in defer}
            # deferred, or rebuilding: its previous snapshot stays current until it is back there
            waves = self._in_lean_order(ready)
            settle_all([self.states[p] for wave in waves for p in wave], self.connection)
            for wave in waves:
                if not self._publish_wave(wave, force):
                    return  # the disk is full: what leans on this wave waits with it
        if self.space.waiting:
            self.space.succeeded()
            self.consumer.resume(*self.consumer.assignment())

    def _publish_wave(self, wave: list[int], force: bool) -> bool:
        """Publish the changed partitions of ``wave`` at once (their writes and fsyncs overlap: none leans on
        another); False if the disk is full (those that failed stay in memory, retried later)."""
        writes: dict[int, tuple[str | None, Future[object]]] = {}
        for partition in wave:
            state = self.states.get(partition)
            if state is None or state.held_back:
                continue  # lost, or rebuilding since it leaned on one lost in this publish
            seal = state.seal_due(self.settings.speed_segment_seconds) or force
            if state.changed or seal:
                writes[partition] = (state.last_open_folder, self._writers.submit(publish, state, self.root, seal))
        wait([write for _, write in writes.values()])  # all done before any outcome changes the states
        full = False
        for partition, (previous_open, write) in writes.items():
            error = write.exception()
            if isinstance(error, LostPartitionError):
                log.warning("%s; dropping it", error)
                self._let_go(partition)
                continue
            if error is not None:
                if not out_of_space(error):
                    raise error
                self.space.failed(error)  # the state stays in memory, unpublished: retried later
                full = True
                continue
            state = self.states[partition]
            state.leans_on.clear()  # the counts it leaned on were published before it
            if state.hold_until:
                log.info("speed partition %d rebuilt up to offset %d: published", partition, state.next_offset)
                state.hold_until = 0
                self.counted.release(partition)
            if previous_open is not None and previous_open != state.last_open_folder:
                superseded = partition_root(self.root, partition) / previous_open
                self._discard_later(superseded, self.settings.speed_superseded_grace_seconds)
        return not full

    def _give_way_to(self, published_elsewhere: IdSet) -> None:
        """Other workers published these ids first: our unpublished copies of them are no counts. Pending rows
        drop them, and so do our counted ids (left there, they would block the other worker's copies once we
        take its partition over and rebuild it). Rows already aggregated for a publish a full disk refused
        cannot give a copy back (a max, a min): that partition reads its open segment again."""
        for own in list(self.states.values()):
            if self.space.waiting and self.counted.speed.overlaps(
                published_elsewhere, own.partition, from_offset=own.published_to
            ):
                self._restart_at(own, own.open_start, OVERTAKEN_ON_A_FULL_DISK)
                continue
            dropped = own.drop_pending(published_elsewhere.contains)
            if dropped:
                self.copies_elsewhere += dropped
                self.counted.dropped(own.partition, published_elsewhere, own.published_to)

    def _let_go_of_taken(self) -> None:
        """Let go of own partitions another worker published since we did: the group gave them to it in a
        rebalance this worker has not seen yet (evicted while a broker was down, say). Done under the publish
        lock, so ``_tail_others`` then reads what that worker counted there; otherwise a copy on one of our
        partitions of an event it counted there would be published next to its count, and counted twice
        until a batch run covered both."""
        for partition, state in list(self.states.items()):
            sequence = current_sequence(self.root, partition)
            if sequence != state.sequence:
                log.warning(
                    "speed partition %d was published by another worker (snapshot %d; ours %d): the group gave "
                    "it away; letting go of it and reading what that worker counted there",
                    partition,
                    sequence,
                    state.sequence,
                )
                self._let_go(partition)

    def _tail_others(self) -> IdSet:
        """Ids other workers published since we last looked (their partitions only)."""
        published = IdSet(positions=False)
        for partition in range(self.settings.topic_partitions):
            if partition in self.states:
                continue
            snapshot = read_snapshot(self.root, partition)
            if snapshot is not None:
                new = self.counted.tail(self.root, snapshot)
                if len(new):
                    published.add_set(new)
        return published

    def _housekeeping(self) -> None:
        now = time.monotonic()
        for state in self.states.values():
            expired = [p for p in state.pruning if p.deadline <= now]
            if expired:
                state.pruning = [p for p in state.pruning if p.deadline > now]
                for pending in expired:
                    folder = partition_root(self.root, state.partition) / pending.segment.folder
                    self._discard_later(folder, self.settings.speed_superseded_grace_seconds)
                state.changed = True
        keep = []
        for deadline, folder in self._garbage:
            if deadline <= now:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                keep.append((deadline, folder))
        self._garbage = keep

    def _discard_later(self, folder: Path, grace_s: float) -> None:
        """Delete a folder no snapshot lists any more, once no reader can still be reading it."""
        self._garbage.append((time.monotonic() + grace_s, folder))
