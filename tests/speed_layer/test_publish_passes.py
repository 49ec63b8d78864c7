"""A publish of the speed worker with copies waiting on another partition's unpublished count.

The waiting partition goes out once, after the partition it waits on, with its rows from the copy on
(the copy dropped, as counted elsewhere); the partition it waits on is not written twice either.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from kafka import KafkaConsumer

from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from speed_layer.state import PartitionState
from speed_layer.store import counted_ids
from speed_layer.worker import SpeedWorker
from tests.fakes import FakeRecord
from tests.speed_layer.test_state import decoded, valid_records

pytestmark = pytest.mark.unit


def fresh_state(partition: int, offset: int) -> PartitionState:
    return PartitionState(partition, open_start=offset, next_offset=offset, cutoff=0, published_to=offset)


def test_a_partition_waiting_on_a_copy_is_published_once_after_the_count_it_waits_on(tmp_path: Path) -> None:
    worker = SpeedWorker(Settings(data_dir=tmp_path), consumer=cast(KafkaConsumer, object()))
    worker.states = {0: fresh_state(0, 0), 3: fresh_state(3, 1000)}
    items = valid_records(600)
    worker._claim(worker.states[0], decoded(items[:400]), 400)
    resent = [FakeRecord(r.value, r.offset + 1000, partition=3) for r in items[150:600]]  # keyless resends
    worker._claim(worker.states[3], decoded(resent), 1450)
    assert 3 in worker._waiting, "partition 3 holds copies of what partition 0 counted and has not published"

    worker._publish(defer=frozenset(worker._waiting))  # what a due publish runs
    worker._publish_waiting()

    root = worker.settings.speed_views_path
    snapshots = {p: read_snapshot(root, p) for p in (0, 3)}
    assert {p: s.sequence for p, s in snapshots.items() if s} == {0: 1, 3: 1}, "each partition written once"
    assert {p: s.next_offset for p, s in snapshots.items() if s} == {0: 400, 3: 1450}
    assert not worker._waiting
    on_zero, on_three = (set(counted_ids(root, worker.states[p]).column("event_id").to_pylist()) for p in (0, 3))
    assert not on_zero & on_three, "a copy is counted once, wherever it lands"
    everything = decoded(items).column("event_id")
    assert len(on_zero | on_three) == len(set(everything.to_pylist()))


def test_an_unserved_worker_drops_a_copy_of_its_unpublished_count_at_once(tmp_path: Path) -> None:
    """A Kappa replay's worker: nobody reads its snapshots before the end, so a copy does not wait for the
    count's publish; each event still counts once, and one publish writes both partitions."""
    worker = SpeedWorker(Settings(data_dir=tmp_path), consumer=cast(KafkaConsumer, object()), served=False)
    worker.states = {0: fresh_state(0, 0), 3: fresh_state(3, 1000)}
    items = valid_records(600)
    worker._claim(worker.states[0], decoded(items[:400]), 400)
    resent = [FakeRecord(r.value, r.offset + 1000, partition=3) for r in items[150:600]]
    worker._claim(worker.states[3], decoded(resent), 1450)
    assert not worker._waiting and worker.copies_waited == 0
    assert worker.copies_elsewhere > 0, "the copies of partition 0's counts were dropped on partition 3"

    worker._publish()

    root = worker.settings.speed_views_path
    assert {p: (s.sequence, s.next_offset) for p in (0, 3) if (s := read_snapshot(root, p))} == {
        0: (1, 400),
        3: (1, 1450),
    }
    on_zero, on_three = (set(counted_ids(root, worker.states[p]).column("event_id").to_pylist()) for p in (0, 3))
    assert not on_zero & on_three
    assert len(on_zero | on_three) == len(set(decoded(items).column("event_id").to_pylist()))
