"""The speed worker: a consumer group member that keeps partial view rows fresh within a second.

For each partition it owns it resumes from the last published snapshot (or starts at the batch
cutoff), aggregates micro-batches, publishes state and offsets atomically at least every
``speed_publish_ms`` while events flow, and seals a segment every ``speed_segment_seconds``.

It follows the batch cutoff ``C``: segments entirely below ``C`` stay listed for a grace period
(readers of the previous batch version may still need them) and then go. If ``C`` lies beyond
everything it holds, it jumps to ``C``; if ``C`` falls inside a segment (the batch could not use a
boundary), it rebuilds the partition from ``C`` by reading Kafka again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaConsumer, TopicPartition

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.intake import KafkaRecord
from lambda_contracts.manifest import current_version, read_manifest
from lambda_contracts.plumbing import duck
from lambda_contracts.plumbing.kafka import new_consumer, subscribe_when_known
from lambda_contracts.plumbing.micro_batch import decode_micro_batch
from lambda_contracts.serde import get_serde
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import partition_root
from speed_layer.state import PartitionState, Pending, settle_all
from speed_layer.store import LostPartitionError, publish, read_ids, restore

log = logging.getLogger(__name__)

MAX_POLL_RECORDS = 20_000


@dataclass(frozen=True)
class InFlight:
    """A poll's records being decoded, and the offset range [start, end) taken per partition."""

    result: Future[tuple[pa.Table, list[DeadLetter]]]
    ranges: dict[int, tuple[int, int]]


class SpeedWorker:
    def __init__(self, settings: Settings, consumer: KafkaConsumer | None = None) -> None:
        self.settings = settings
        self.topic = settings.events_topic
        self.root = settings.speed_views_path
        self.group = settings.speed_group
        self.serde = get_serde(settings.serde)
        self.consumer = consumer or new_consumer(settings, self.group, max_poll_records=MAX_POLL_RECORDS)
        self.connection = duck.connect()
        self.states: dict[int, PartitionState] = {}
        self._batch_version = -1
        self._cutoffs: dict[int, int] = {}
        self._last_publish = time.monotonic()
        self._garbage: list[tuple[float, Path]] = []
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speed-decode")
        self._in_flight: InFlight | None = None
        self.events_counted = 0
        self.events_rejected = 0
        self.first_assignment_at: float | None = None
        """When the group first gave this worker partitions (monotonic), for throughput figures."""

    def run(self, stop: threading.Event) -> None:
        subscribe_when_known(self.consumer, self.topic)
        try:
            while not stop.is_set():
                batches = self.consumer.poll(timeout_ms=100)  # meanwhile the previous poll was decoded
                self._take_decoded()
                self._follow_assignment()
                self._follow_cutoffs()
                self._decode(batches)
                if self._publish_is_due():
                    self._take_decoded()
                    self._publish()
                self._housekeeping()
            self._take_decoded()
            self._publish(force=True)
        finally:
            self._decoder.shutdown(wait=True, cancel_futures=True)
            self.consumer.close(autocommit=False)

    # -- partitions and cutoffs -------------------------------------------------------------------

    def _follow_assignment(self) -> None:
        assigned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        for partition in set(self.states) - assigned:
            del self.states[partition]  # the new owner resumes from what we published
        if assigned and self.first_assignment_at is None:
            self.first_assignment_at = time.monotonic()
        for partition in sorted(assigned - set(self.states)):
            cutoff = self._cutoffs.get(partition, 0)
            state = restore(self.root, partition, cutoff)
            if state is None:  # published at once, so readers and probes see the partition is owned
                state = PartitionState(partition, open_start=cutoff, next_offset=cutoff, cutoff=cutoff, changed=True)
            self.states[partition] = state
            self.consumer.seek(TopicPartition(self.topic, partition), state.next_offset)
            log.info("speed worker took partition %d at offset %d", partition, state.next_offset)
            self._apply_cutoff(state)

    def _follow_cutoffs(self) -> None:
        batch_root = self.settings.batch_views_path
        version = current_version(batch_root)
        if version == self._batch_version:
            return
        self._batch_version = version
        self._cutoffs = dict(read_manifest(batch_root, version).cutoffs)
        for state in self.states.values():
            self._apply_cutoff(state)

    def _apply_cutoff(self, state: PartitionState) -> None:
        cutoff = self._cutoffs.get(state.partition, 0)
        if cutoff <= state.cutoff:
            return
        grace = time.monotonic() + self.settings.speed_prune_grace_seconds
        below = [s for s in state.segments if s.end <= cutoff]
        state.segments = [s for s in state.segments if s.end > cutoff]
        state.pruning.extend(Pending(grace, s) for s in below)
        state.cutoff = cutoff
        boundaries = {s.start for s in state.segments} | {state.open_start}
        if cutoff in boundaries:
            pass  # aligned: what remains starts exactly at the cutoff
        elif cutoff >= state.next_offset:
            self._restart_at(state, cutoff, "jumps to the batch cutoff")
        else:
            state.segments = []
            self._restart_at(state, cutoff, "rebuilds from the batch cutoff (it fell inside a segment)")
        state.changed = True

    def _restart_at(self, state: PartitionState, offset: int, why: str) -> None:
        log.warning("speed partition %d %s at offset %d", state.partition, why, offset)
        state.restart_at(offset)
        self.consumer.seek(TopicPartition(self.topic, state.partition), offset)

    # -- consuming and publishing -----------------------------------------------------------------

    def _decode(self, batches: dict[TopicPartition, list[KafkaRecord]]) -> None:
        """Start decoding a poll's new records in one vectorized pass, in the background.

        Arrow's regex and JSON reader release the GIL, so the decoding overlaps the next poll
        (kafka-python's record parsing, pure Python). ``_take_decoded`` hands over the rows.
        """
        fresh: list[KafkaRecord] = []
        ranges: dict[int, tuple[int, int]] = {}
        for tp, records in batches.items():
            state = self.states.get(tp.partition)
            if state is None:
                continue
            new = [r for r in records if r.offset >= state.next_offset]
            if not new:
                continue
            if new[0].offset > state.next_offset:  # a fetch from an older position: read again from ours
                self.consumer.seek(TopicPartition(self.topic, tp.partition), state.next_offset)
                continue
            fresh.extend(new)
            ranges[tp.partition] = (state.next_offset, new[-1].offset + 1)
        if fresh:
            future = self._decoder.submit(decode_micro_batch, fresh, self.serde, self.group)
            self._in_flight = InFlight(future, ranges)

    def _take_decoded(self) -> None:
        """Give each partition its rows from the decode in flight (if its position did not move)."""
        if self._in_flight is None:
            return
        in_flight, self._in_flight = self._in_flight, None
        events, rejected = in_flight.result.result()
        self.events_rejected += len(rejected)  # kept in the dead-letter topic by the lake sink
        partitions = events.column("kafka_partition")
        for partition, (start, end) in in_flight.ranges.items():
            state = self.states.get(partition)
            if state is None or state.next_offset != start:
                continue  # lost or moved (a cutoff) since: these records are read again where needed
            rows = events if len(in_flight.ranges) == 1 else events.filter(pc.equal(partitions, partition))
            self.events_counted += state.take(rows, end)

    def _publish_is_due(self) -> bool:
        return time.monotonic() - self._last_publish >= self.settings.speed_publish_ms / 1000

    def _publish(self, force: bool = False) -> None:
        self._last_publish = time.monotonic()
        settle_all(self.states.values(), self.connection)
        for partition, state in list(self.states.items()):
            seal = state.seal_due(self.settings.speed_segment_seconds) or force
            if not state.changed and not seal:
                continue
            previous_open = state.last_open_folder
            try:
                publish(state, self.root, seal=seal)
            except LostPartitionError as lost:
                log.warning("%s; dropping it", lost)
                del self.states[partition]
                continue
            if previous_open is not None and previous_open != state.last_open_folder:
                self._discard_later(partition_root(self.root, partition) / previous_open)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        for state in self.states.values():
            expired = [p for p in state.pruning if p.deadline <= now]
            if expired:
                state.pruning = [p for p in state.pruning if p.deadline > now]
                horizon = now + self.settings.speed_dedup_horizon_seconds
                state.dedup.extend(Pending(horizon, p.segment) for p in expired)
                state.changed = True
            gone = [p for p in state.dedup if p.deadline <= now]
            if gone:
                state.dedup = [p for p in state.dedup if p.deadline > now]
                for pending in gone:
                    folder = partition_root(self.root, state.partition) / pending.segment.folder
                    state.forget(list(read_ids(folder)))
                    self._discard_later(partition_root(self.root, state.partition) / pending.segment.folder)
                state.changed = True
        keep = []
        for deadline, folder in self._garbage:
            if deadline <= now:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                keep.append((deadline, folder))
        self._garbage = keep

    def _discard_later(self, folder: Path) -> None:
        """Delete a folder no snapshot lists any more, once no reader can still be reading it."""
        self._garbage.append((time.monotonic() + self.settings.speed_prune_grace_seconds, folder))
