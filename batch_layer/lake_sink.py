"""The lake sink: a consumer group that writes valid events to the lake, exactly once.

Exactly once comes from the lake, not from Kafka: a partition's position is the offset recorded
in the lake's last commit. The sink seeks there whenever it gains a partition, skips anything
below what it already holds, and commits rows and offsets together. Kafka group offsets are
committed afterwards only so that lag shows in the usual tools.

It is the platform's only writer of dead letters (the other consumers only count rejects): a bad
record is in the dead-letter topic before the commit that moves past it, and a sink that takes a
partition over skips the bad records a crashed owner already kept there.

Nothing happens inside rebalance callbacks (they run on kafka-python's IO loop): the main loop
notices new partitions after each poll, and the lake's compare-and-swap rejects a commit for a
partition that another sink has advanced meanwhile. A consumer that stays out of its group while
it keeps polling (kafka-python once stayed "rebalancing" for minutes while the broker listed the
group empty) is replaced by a new one: the lake, not the member, decides where it resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import CommitFailedError, KafkaTimeoutError, RebalanceInProgressError

from batch_layer.lake import FencedError, Lake
from lambda_contracts.columns import EVENT_SCHEMA, with_ingest_time
from lambda_contracts.intake import KafkaRecord
from lambda_contracts.plumbing.dead_letters import DeadLetterPublisher, last_dead_lettered
from lambda_contracts.plumbing.files import SpaceWait, out_of_space
from lambda_contracts.plumbing.kafka import new_consumer, subscribe_when_known
from lambda_contracts.plumbing.micro_batch import decode_micro_batch
from lambda_contracts.serde import WIRE
from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)
GROUP_COMMIT_TIMEOUT_MS = 5000

POLL_TIMEOUT_MS = 200
MAX_POLL_RECORDS = 20_000
DECODE_BATCH = 20_000
FETCH_MIN_BYTES = 1024 * 1024
FETCH_MAX_WAIT_MS = 500
"""The lake commits every ``lake_flush_seconds``: a fetch may wait up to half a second for 1 MiB of records,
so at low rates the broker answers a couple of fetches a second instead of one per producer request."""
DEAD_LETTER_FLUSH_S = 30.0
"""How long a flush waits for the dead-letter topic to acknowledge before it gives up until the next flush."""


def sink_consumer(settings: Settings) -> KafkaConsumer:
    """A member of the lake sink's consumer group."""
    return new_consumer(
        settings,
        settings.lake_sink_group,
        max_poll_records=MAX_POLL_RECORDS,
        fetch_min_bytes=FETCH_MIN_BYTES,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )


@dataclass
class SinkStats:
    commits: int = 0
    rows: int = 0
    rejected: int = 0
    fenced: int = 0
    rejoins: int = 0
    committed_offsets: dict[int, int] = field(default_factory=dict)


class LakeSink:
    """Consume the events topic into the lake until ``stop`` is set."""

    def __init__(self, settings: Settings, group_consumer: Callable[[Settings], KafkaConsumer] = sink_consumer) -> None:
        self.settings = settings
        self.topic = settings.events_topic
        self.lake = Lake(settings.lake_path, self.topic)
        self.serde = WIRE  # every format producers may write, on one topic
        self.group = settings.lake_sink_group
        self._group_consumer = group_consumer
        self.consumer = group_consumer(settings)
        self.rejoin_after_s = max(30.0, 3 * settings.consumer_session_timeout_ms / 1000)
        """How long the group may refuse every offset mirror before the sink replaces its consumer."""
        self._out_of_group_since: float | None = None
        self.dead_letters = DeadLetterPublisher(settings)
        self.stats = SinkStats()
        self._committed: dict[int, int] = {}  # partition -> next offset the lake holds
        self._next: dict[int, int] = {}  # partition -> next offset expected (lake + buffer)
        self._buffer: dict[int, list[pa.Table]] = {}
        self._raw: list[KafkaRecord] = []
        """Records taken but not decoded yet (all partitions): decoded together, at the latest on flush."""
        self._buffered_rows = 0
        self._gap_checked: set[int] = set()
        self._dead_lettered: dict[int, int] = {}
        """Partition -> the highest source offset already in the dead-letter topic when we took it."""
        self._last_flush = time.monotonic()
        self.space = SpaceWait("lake sink", settings.lake_path)
        self._dead_letters_late_since: float | None = None
        """Since when the dead-letter topic has not acknowledged a flush in time (None: it does)."""

    def run(self, stop: threading.Event) -> SinkStats:
        self.lake.ensure_table()
        subscribe_when_known(self.consumer, self.topic)
        try:
            while not stop.is_set():
                if self._held_up:
                    self.consumer.pause(*self.consumer.assignment())  # take nothing more while we cannot commit
                batches = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                self._follow_assignment()
                for tp, records in batches.items():
                    self._take(tp, records)
                if self._due():
                    self.flush()
            self.flush()
        finally:
            self.consumer.close(autocommit=False)
            self.dead_letters.close()
        return self.stats

    # -- consuming -------------------------------------------------------------------------------

    def _follow_assignment(self) -> None:
        """Start newly assigned partitions at the lake's offset; forget partitions we lost."""
        assigned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        lost = set(self._next) - assigned
        for partition in lost:
            self._forget(partition)
        gained = assigned - set(self._next)
        if gained:
            offsets = self.lake.committed_offsets(gained)
            self._dead_lettered.update(last_dead_lettered(self.settings, gained))
            for partition, offset in offsets.items():
                self._committed[partition] = self._next[partition] = offset
                self._buffer[partition] = []
                self.consumer.seek(TopicPartition(self.topic, partition), offset)
            log.info("lake sink took partitions %s at lake offsets %s", sorted(gained), offsets)

    def _take(self, tp: TopicPartition, records: list[KafkaRecord]) -> None:
        partition = tp.partition
        expected = self._next.get(partition)
        if expected is None:
            return  # fetched before we noticed the assignment; it is re-read after the seek
        fresh = [r for r in records if r.offset >= expected]
        if not fresh:
            return
        if fresh[0].offset > expected and partition not in self._gap_checked:
            self._gap_checked.add(partition)
            self.consumer.seek(tp, expected)  # a fetch from an older position; read again from ours
            return
        if fresh[0].offset > expected:
            log.error(
                "partition %d: offsets %d..%d are no longer in Kafka (retention?); the lake misses them",
                partition,
                expected,
                fresh[0].offset - 1,
            )
        self._gap_checked.discard(partition)
        self._raw.extend(fresh)
        self._buffered_rows += len(fresh)
        self._next[partition] = fresh[-1].offset + 1
        if len(self._raw) >= DECODE_BATCH:
            self._decode()

    def _decode(self) -> None:
        """Decode every record taken since the last decode in one vectorized pass, whatever its partition.

        Decoding has a fixed cost per call (the canonical-record pattern is compiled each time), so at
        low rates the sink decodes when it flushes, not per partition and poll.
        """
        if not self._raw:
            return
        raw, self._raw = self._raw, []
        events, rejected = decode_micro_batch(raw, self.serde, rejected_by=self.group)
        letters = [r for r in rejected if r.source_offset > self._dead_lettered.get(r.source_partition, -1)]
        self.dead_letters.publish(letters)  # not those a crashed owner kept already
        self.stats.rejected += len(rejected)
        self._buffered_rows += events.num_rows - len(raw)
        partitions = events.column("kafka_partition")
        for partition in {r.partition for r in raw}:
            self._buffer[partition].append(events.filter(pc.equal(partitions, partition)))

    def _due(self) -> bool:
        if self.space.waiting:
            return self.space.may_try()
        if self._buffered_rows >= self.settings.lake_flush_rows:
            return True
        pending = any(self._next[p] != self._committed[p] for p in self._next)
        return pending and time.monotonic() - self._last_flush >= self.settings.lake_flush_seconds

    # -- committing ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit buffered rows and offsets in one Delta commit (dead letters are written first)."""
        self._last_flush = time.monotonic()
        partitions = [p for p in self._next if self._next[p] != self._committed[p]]
        if not partitions:
            self._space_back()  # nothing held any more (the partitions moved): take records again
            return
        self._decode()
        if not self._dead_letters_acknowledged():
            return  # a rejected record is in the dead-letter topic before its offset is committed
        while partitions:
            rows = pa.concat_tables([EVENT_SCHEMA.empty_table()] + [t for p in partitions for t in self._buffer[p]])
            expected = {p: self._committed[p] for p in partitions}
            next_offsets = {p: self._next[p] for p in partitions}
            try:
                version = self.lake.append(with_ingest_time(rows, datetime.now(UTC)), expected, next_offsets)
            except FencedError as fenced:
                self._fenced(fenced.partitions)
                partitions = [p for p in partitions if p not in fenced.partitions]
                continue
            except Exception as error:
                if not out_of_space(error):
                    raise
                self.space.failed(error)  # the rows stay buffered, the offsets uncommitted: retried later
                return
            self._space_back()
            self._committed.update(next_offsets)
            self.stats.commits += 1
            self.stats.rows += rows.num_rows
            self.stats.committed_offsets = dict(self._committed)
            for p in partitions:
                self._buffer[p] = []
            self._buffered_rows = sum(t.num_rows for b in self._buffer.values() for t in b)
            log.info("lake version %d: %d rows, offsets %s", version, rows.num_rows, next_offsets)
            self._commit_group_offsets(next_offsets)
            return

    def _dead_letters_acknowledged(self) -> bool:
        """Wait for the dead letters sent so far; False if the brokers did not acknowledge them in time.

        While a broker node fails over (or fewer replicas than ``min.insync.replicas`` are in sync) that can
        take longer than the flush's timeout. The rows and offsets stay uncommitted and the next flush waits
        again, so a failover slows the sink down instead of stopping it; a dead letter the producer gave up
        on (``DeadLetterError``) still stops it, to be re-read from the lake's offsets by its restart."""
        try:
            self.dead_letters.flush(timeout_s=DEAD_LETTER_FLUSH_S)
        except KafkaTimeoutError:
            if self._dead_letters_late_since is None:
                self._dead_letters_late_since = time.monotonic()
                log.warning(
                    "the dead-letter topic did not acknowledge this flush's dead letters within %.0f s (a broker "
                    "failing over, or fewer replicas in sync than min.insync.replicas); nothing is committed "
                    "until it does, and each flush waits again. Check `lambdactl broker status` if it lasts.",
                    DEAD_LETTER_FLUSH_S,
                )
            return False
        if self._dead_letters_late_since is not None:
            log.warning(
                "the dead-letter topic acknowledged again after %.0f s; committing",
                time.monotonic() - self._dead_letters_late_since,
            )
            self._dead_letters_late_since = None
            self._resume_unless_held_up()
        return True

    @property
    def _held_up(self) -> bool:
        """Whether a commit cannot happen now: the disk is full, or dead letters wait to be acknowledged."""
        return self.space.waiting or self._dead_letters_late_since is not None

    def _resume_unless_held_up(self) -> None:
        if not self._held_up:
            self.consumer.resume(*self.consumer.assignment())

    def _space_back(self) -> None:
        if self.space.waiting:
            self.space.succeeded()
            self._resume_unless_held_up()

    def _fenced(self, advanced: dict[int, int]) -> None:
        """Another sink wrote these partitions: drop our copy and continue from the lake's offset."""
        self.stats.fenced += len(advanced)
        log.warning("lake sink fenced on partitions %s; resuming from the lake's offsets", advanced)
        self._dead_lettered.update(last_dead_lettered(self.settings, advanced))
        for partition, offset in advanced.items():
            self._buffered_rows -= sum(t.num_rows for t in self._buffer.get(partition, []))
            self._buffer[partition] = []
            self._committed[partition] = self._next[partition] = offset
            tp = TopicPartition(self.topic, partition)
            if tp in self.consumer.assignment():
                self.consumer.seek(tp, offset)

    def _forget(self, partition: int) -> None:
        kept = [r for r in self._raw if r.partition != partition]
        self._buffered_rows -= len(self._raw) - len(kept)
        self._raw = kept
        self._dead_lettered.pop(partition, None)
        self._buffered_rows -= sum(t.num_rows for t in self._buffer.pop(partition, []))
        self._next.pop(partition, None)
        self._committed.pop(partition, None)

    def _commit_group_offsets(self, offsets: dict[int, int]) -> None:
        """Mirror the lake's offsets into the consumer group, for lag monitoring only."""
        try:
            self.consumer.commit(
                {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()},
                timeout_ms=GROUP_COMMIT_TIMEOUT_MS,  # bounded: with Kafka gone it would retry forever
            )
        except Exception as error:  # the lake is the source of truth; lag display can wait
            log.warning("could not mirror lake offsets to the consumer group: %s", error)
            if isinstance(error, RebalanceInProgressError | CommitFailedError):  # not a member of the group now
                self._out_of_group(error)
        else:
            self._out_of_group_since = None

    def _out_of_group(self, error: Exception) -> None:
        """Replace a consumer that polls on but has not been a member of the group for too long.

        A rebalance normally ends within a session timeout or two; until then the group refuses
        offsets. Called only after a lake commit, so nothing is buffered: the new consumer's
        partitions start, like any gained partition, at the lake's offsets.
        """
        now = time.monotonic()
        if self._out_of_group_since is None:
            self._out_of_group_since = now
            return
        if now - self._out_of_group_since < self.rejoin_after_s:
            return
        log.warning(
            "lake sink: group %s has refused every offset for %.0fs (%s) although the sink keeps polling; "
            "joining again with a new consumer (see logs/kafka-client.log for the client's view)",
            self.group,
            now - self._out_of_group_since,
            type(error).__name__,
        )
        self.consumer.close(autocommit=False, timeout_ms=GROUP_COMMIT_TIMEOUT_MS)
        for partition in list(self._next):
            self._forget(partition)
        self.consumer = self._group_consumer(self.settings)
        subscribe_when_known(self.consumer, self.topic)
        self._out_of_group_since = None
        self.stats.rejoins += 1
