"""A publish of the speed worker with copies of another partition's unpublished count.

A copy of an own count not yet published is dropped at once when the count's partition goes out
before the copy's in the same publish (readers see the count no later than the drop); the copy's
partition waits only when that order is impossible (the two partitions lean on each other), and then
goes out once more after the count it waits on. If the count's partition loses what it counted, the
partition that leaned on it reads again from what it published.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
from kafka import KafkaConsumer, TopicPartition

import speed_layer.worker
from lambda_contracts.plumbing.event_ids import id_bytes
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from speed_layer.state import PartitionState
from speed_layer.store import LostPartitionError, counted_ids, publish, restore
from speed_layer.worker import SpeedWorker
from tests.fakes import FakeRecord
from tests.speed_layer.test_state import decoded, valid_records

pytestmark = pytest.mark.unit


class SeekingConsumer:
    """The consumer calls a rebuild makes: where each partition was sent to read again."""

    def __init__(self) -> None:
        self.seeks: list[tuple[int, int]] = []

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition.partition, offset))


def fresh_state(partition: int, offset: int) -> PartitionState:
    return PartitionState(partition, open_start=offset, next_offset=offset, cutoff=0, published_to=offset)


def worker_of_0_and_3(tmp_path: Path, consumer: object | None = None, served: bool = True) -> SpeedWorker:
    """A worker owning partitions 0 (from offset 0) and 3 (from offset 1000), nothing read yet."""
    kafka = cast(KafkaConsumer, consumer if consumer is not None else object())
    worker = SpeedWorker(Settings(data_dir=tmp_path), consumer=kafka, served=served)
    worker.states = {0: fresh_state(0, 0), 3: fresh_state(3, 1000)}
    return worker


def published(worker: SpeedWorker) -> dict[int, tuple[int, int]]:
    """Partition -> (sequence, next offset) of its current snapshot."""
    root = worker.settings.speed_views_path
    return {p: (s.sequence, s.next_offset) for p in (0, 3) if (s := read_snapshot(root, p))}


def copies(records: list[FakeRecord], partition: int, first_offset: int) -> list[FakeRecord]:
    """The same records resent on ``partition`` (keyless resends), from ``first_offset`` on."""
    return [FakeRecord(r.value, first_offset + i, partition=partition) for i, r in enumerate(records)]


def distinct_records(count: int) -> list[FakeRecord]:
    """Records of ``count`` different events (the simulators resend some), at offsets 0, 1, ..."""
    records = valid_records(2 * count)
    ids = decoded(records).column("event_id").to_pylist()
    first = [r for i, r in enumerate(records) if ids.index(ids[i]) == i][:count]
    assert len(first) == count
    return [FakeRecord(r.value, offset) for offset, r in enumerate(first)]


def recording_publishes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    order: list[int] = []

    def recorded(state: PartitionState, root: Path, seal: bool) -> object:
        order.append(state.partition)
        return publish(state, root, seal=seal)

    monkeypatch.setattr(speed_layer.worker, "publish", recorded)
    return order


def counted_once(worker: SpeedWorker, partitions: tuple[int, ...], records: list[FakeRecord]) -> None:
    root = worker.settings.speed_views_path
    seen = [set(counted_ids(root, worker.states[p]).column("event_id").to_pylist()) for p in partitions]
    assert sum(len(ids) for ids in seen) == len(set().union(*seen)), "a copy is counted once, wherever it lands"
    assert set().union(*seen) == set(id_bytes(decoded(records).column("event_id")).to_pylist())


def test_a_copy_of_an_unpublished_count_is_dropped_at_once_and_published_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = worker_of_0_and_3(tmp_path)
    items = valid_records(600)
    worker._claim(worker.states[0], decoded(items[:400]), 400)
    worker._claim(worker.states[3], decoded(copies(items[150:600], 3, 1000)), 1450)
    assert not worker._waiting and worker.copies_waited == 0, "partition 3 drops copies of 0's counts at once"
    assert worker.states[3].leans_on == {0}

    order = recording_publishes(monkeypatch)
    worker._publish(defer=frozenset(worker._waiting))  # what a due publish runs
    worker._publish_waiting()

    assert order == [0, 3], "the count's partition goes out first, each once"
    assert published(worker) == {0: (1, 400), 3: (1, 1450)}
    assert not worker.states[3].leans_on
    counted_once(worker, (0, 3), items)


def test_partitions_with_copies_of_each_other_s_unpublished_counts_wait_once_and_count_each_event_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = worker_of_0_and_3(tmp_path)
    items = distinct_records(600)
    worker._claim(worker.states[0], decoded(items[:300]), 300)
    worker._claim(worker.states[3], decoded(copies(items[300:600], 3, 1000)), 1300)
    worker._claim(worker.states[0], decoded(copies(items[300:350], 0, 300)), 350)  # 0 leans on 3
    worker._claim(worker.states[3], decoded(copies(items[0:50], 3, 1300)), 1350)  # 3 cannot lean on 0
    assert worker.states[0].leans_on == {3} and set(worker._waiting) == {3}

    order = recording_publishes(monkeypatch)
    worker._publish(defer=frozenset(worker._waiting))
    worker._publish_waiting()

    assert order == [3, 0, 3], "3 goes out before 0, which leans on it, then with the copies it waited on"
    assert published(worker) == {0: (1, 350), 3: (2, 1350)}
    assert not worker._waiting
    counted_once(worker, (0, 3), items)


def test_a_partition_that_leaned_on_a_lost_partition_reads_again_from_what_it_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = SeekingConsumer()
    worker = worker_of_0_and_3(tmp_path, consumer)
    items = valid_records(400)
    for state in worker.states.values():
        state.changed = True  # as when taken: published at once, empty
    worker._publish()
    worker._claim(worker.states[0], decoded(items), 400)
    worker._claim(worker.states[3], decoded(copies(items[100:400], 3, 1000)), 1300)
    assert worker.states[3].leans_on == {0}

    def lost_zero(state: PartitionState, root: Path, seal: bool) -> object:
        if state.partition == 0:
            raise LostPartitionError("partition 0 was published by another worker")
        return publish(state, root, seal=seal)

    monkeypatch.setattr(speed_layer.worker, "publish", lost_zero)
    worker._publish()

    assert 0 not in worker.states
    three = worker.states[3]
    assert (three.next_offset, three.hold_until) == (1000, 1300), "reads again from its open segment, held"
    assert consumer.seeks[-1] == (3, 1000)
    snapshot = read_snapshot(worker.settings.speed_views_path, 3)
    assert snapshot is not None and snapshot.next_offset == 1000, "readers still see what it published"
    ids = decoded(items).column("event_id")
    assert not worker.counted.speed.contains(ids).any(), "nothing it counted unpublished blocks a copy"


def test_an_unserved_worker_drops_a_copy_of_its_unpublished_count_at_once(tmp_path: Path) -> None:
    """A Kappa replay's worker: nobody reads its snapshots before the end, so a copy does not wait for the
    count's publish; each event still counts once, and one publish writes both partitions."""
    worker = worker_of_0_and_3(tmp_path, served=False)
    items = valid_records(600)
    worker._claim(worker.states[0], decoded(items[:400]), 400)
    worker._claim(worker.states[3], decoded(copies(items[150:600], 3, 1000)), 1450)
    assert not worker._waiting and worker.copies_waited == 0
    assert worker.copies_elsewhere > 0, "the copies of partition 0's counts were dropped on partition 3"
    assert not worker.states[3].leans_on, "nobody reads it before the end: no order to keep"

    worker._publish()

    assert published(worker) == {0: (1, 400), 3: (1, 1450)}
    counted_once(worker, (0, 3), items)


def test_a_rebuild_that_cannot_spill_to_a_full_disk_keeps_its_events_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = worker_of_0_and_3(tmp_path)
    worker.settings = worker.settings.model_copy(update={"speed_rebuild_memory_events": 10})
    state = worker.states[0]
    state.hold_until = 10_000  # rebuilding: its events wait raw until it publishes
    events = decoded(distinct_records(30))
    state.take(events, 30)

    def full(self: object, chunks: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("speed_layer.spill.Spill.write", full)
    worker._spill_if_large(state, tmp_path / "scratch")
    assert state.pending_rows == 30 and sum(t.num_rows for t in state.pending) == 30, "nothing is lost"
    assert "no space left to keep its rebuild's events on disk" in caplog.text


def test_a_copy_of_what_a_stale_owner_published_on_a_partition_taken_from_it_is_not_counted_again(
    tmp_path: Path,
) -> None:
    """A rebalance gave partition 0 to the second worker while the first, evicted from the group without
    knowing it yet (its coordinator died, say), still publishes it. The second worker must not count on
    partition 3 copies of what the first just published on 0: it lets go of 0 and reads its ids first."""
    stale = SpeedWorker(Settings(data_dir=tmp_path), consumer=cast(KafkaConsumer, object()))
    stale.states = {0: fresh_state(0, 0)}
    stale.states[0].changed = True
    stale._publish()
    new_owner = SpeedWorker(Settings(data_dir=tmp_path), consumer=cast(KafkaConsumer, SeekingConsumer()))
    restored = restore(new_owner.settings.speed_views_path, 0, cutoff=0)
    assert restored is not None
    new_owner.states = {0: restored, 3: fresh_state(3, 1000)}
    items = distinct_records(300)

    stale._claim(stale.states[0], decoded(items), 300)
    stale._publish()  # its own publishes of 0 are still accepted: the new owner has not published 0
    new_owner._claim(new_owner.states[3], decoded(copies(items[100:300], 3, 1000)), 1200)
    new_owner._publish()

    assert 0 not in new_owner.states, "it lets go of the partition another worker published since it took it"
    root = new_owner.settings.speed_views_path
    zero, three = read_snapshot(root, 0), read_snapshot(root, 3)
    assert zero is not None and three is not None
    assert (zero.next_offset, three.next_offset) == (300, 1200)
    seen = [
        set(counted_ids(root, restore(root, p, cutoff=0) or fresh_state(p, 0)).column("event_id").to_pylist())
        for p in (0, 3)
    ]
    assert not seen[0] & seen[1], "each copy counted once, wherever it lands"
    assert seen[0] | seen[1] == set(id_bytes(decoded(items).column("event_id")).to_pylist())


class AssigningConsumer(SeekingConsumer):
    """A consumer whose group assigned it ``partitions``."""

    def __init__(self, topic: str, partitions: set[int]) -> None:
        super().__init__()
        self.partitions = {TopicPartition(topic, p) for p in partitions}

    def assignment(self) -> set[TopicPartition]:
        return self.partitions


def test_copies_dropped_for_what_another_worker_published_first_do_not_block_them_when_it_takes_that_partition(
    tmp_path: Path,
) -> None:
    """A worker counts events on partition 0; the other worker counts copies of some of them on partition 3 and
    publishes first, so the first drops its copies at its publish (first published wins). Later it takes
    partition 3 over, reconciled with an older batch version (nobody held it across a publish: its worker was
    killed, this one paused), and rebuilds it from the cutoff: the rebuild must count them again, for nothing
    else does. The dropped copies on 0 once stayed in its counted ids and made the rebuild drop them (seen in
    the chaos soak as events missing from the merged views until the next batch run)."""
    settings = Settings(data_dir=tmp_path)
    worker = SpeedWorker(settings, consumer=cast(KafkaConsumer, AssigningConsumer(settings.events_topic, {0, 3})))
    worker.states = {0: fresh_state(0, 0)}
    other = SpeedWorker(settings, consumer=cast(KafkaConsumer, SeekingConsumer()))
    other.states = {3: fresh_state(3, 1000)}
    items = distinct_records(300)

    worker._claim(worker.states[0], decoded(items[:200]), 200)  # not published yet
    other._claim(other.states[3], decoded(copies(items[100:300], 3, 1000)), 1200)
    other._publish()
    worker._publish()  # reads what 3 published first and drops its copies from 0
    dropped = set(id_bytes(decoded(items[100:200]).column("event_id")).to_pylist())
    root = settings.speed_views_path
    assert not dropped & set(counted_ids(root, worker.states[0]).column("event_id").to_pylist())

    worker.manifest = replace(worker.manifest, version=1)  # published while nobody held partition 3
    worker._follow_assignment()
    assert worker.states[3].hold_until == 1200, "it rebuilds 3 from the cutoff, its old snapshot held meanwhile"
    worker._claim(worker.states[3], decoded(copies(items[100:300], 3, 1000)), 1200)  # the rebuild reads them again
    worker._publish()

    assert published(worker) == {0: (1, 200), 3: (2, 1200)}
    counted_once(worker, (0, 3), items)


class PausingConsumer(AssigningConsumer):
    """Also pauses and resumes (a full disk stops the intake)."""

    def pause(self, *partitions: TopicPartition) -> None:
        pass

    def resume(self, *partitions: TopicPartition) -> None:
        pass


def test_rows_a_full_disk_kept_unpublished_give_back_a_copy_another_worker_published_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish refused by a full disk leaves a partition's rows aggregated but unpublished. If another worker
    then publishes copies of some of those events first, the aggregated rows cannot give them back (a max, a
    min): the partition reads its open segment again, and the copies are dropped then."""
    settings = Settings(data_dir=tmp_path)
    worker = SpeedWorker(settings, consumer=cast(KafkaConsumer, PausingConsumer(settings.events_topic, {0})))
    worker.states = {0: fresh_state(0, 0)}
    other = SpeedWorker(settings, consumer=cast(KafkaConsumer, SeekingConsumer()))
    other.states = {3: fresh_state(3, 1000)}
    items = distinct_records(300)

    worker._claim(worker.states[0], decoded(items[:200]), 200)

    def full(state: PartitionState, root: Path, seal: bool) -> object:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as disk:
        disk.setattr(speed_layer.worker, "publish", full)
        worker._publish()
    assert worker.space.waiting and read_snapshot(settings.speed_views_path, 0) is None

    other._claim(other.states[3], decoded(copies(items[100:300], 3, 1000)), 1200)
    other._publish()
    worker._publish()  # space is back: it reads what 3 published first
    assert cast(SeekingConsumer, worker.consumer).seeks[-1] == (0, 0), "partition 0 reads its open segment again"
    worker._claim(worker.states[0], decoded(items[:200]), 200)
    worker._publish()

    assert {p: offset for p, (_, offset) in published(worker).items()} == {0: 200, 3: 1200}
    root = settings.speed_views_path
    seen = [
        set(counted_ids(root, restore(root, p, cutoff=0) or fresh_state(p, 0)).column("event_id").to_pylist())
        for p in (0, 3)
    ]
    assert not seen[0] & seen[1], "each copy counted once, wherever it lands"
    assert seen[0] | seen[1] == set(id_bytes(decoded(items).column("event_id")).to_pylist())
