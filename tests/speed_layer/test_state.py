"""Speed state: micro-batches merged incrementally equal a from-scratch computation, restarts included."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import split
from lambda_contracts.plumbing import duck
from lambda_contracts.plumbing.event_ids import IdSet
from lambda_contracts.plumbing.micro_batch import decode_micro_batch
from lambda_contracts.serde import JsonSerde
from lambda_contracts.speed_snapshot import partition_root, read_snapshot, snapshot_path
from lambda_contracts.views import FIRST_VIEWS, VIEW_NAMES, VIEWS
from sources.simulators import merged_records
from speed_layer.counted import BatchIds, Counted
from speed_layer.state import ID_SCHEMA, PartitionState, settle_all
from speed_layer.store import LostPartitionError, counted_ids, publish, restore
from tests.fakes import FakeRecord
from tests.flows import lively_simulators
from tests.oracle import first_copies, served_rows, view_rows

pytestmark = pytest.mark.unit


def valid_records(count: int) -> list[FakeRecord]:
    simulators = lively_simulators(
        seed=13, start=datetime(2026, 11, 24, 9, tzinfo=UTC), rate=40.0, duplicate_share=0.1, malformed_share=0.0
    )
    records = [
        FakeRecord(r.value, offset) for offset, r in enumerate(itertools.islice(merged_records(simulators), count))
    ]
    return records


def decoded(records: list[FakeRecord]) -> pa.Table:
    """Rows as the speed worker gets them (the vectorized decoder)."""
    events, rejected = decode_micro_batch(records, JsonSerde(), rejected_by="test")
    assert not rejected
    return events


def counter(tmp_path: Path | None = None) -> Counted:
    """The dedup authority with no batch version yet."""
    return Counted(BatchIds(tmp_path or Path("/nonexistent"), timedelta(minutes=5)))


def take(state: PartitionState, counted: Counted, records: list[FakeRecord]) -> None:
    state.take(counted.claim(state.partition, decoded(records)).rows, records[-1].offset + 1)


def rows_of(state: PartitionState) -> dict[str, list[tuple[Any, ...]]]:
    return {view.name: served_rows(view, state.open_rows.get(view.name)) for view in VIEWS}


def expected(
    items: list[FakeRecord], below: int | None = None, from_offset: int = 0
) -> dict[str, list[tuple[Any, ...]]]:
    accepted, _ = split(items, JsonSerde(), rejected_by="oracle")  # pydantic, record by record
    table = events_to_arrow(accepted).to_pylist()
    cutoff = {0: below if below is not None else 10**12}
    firsts = [row for row in first_copies(table, cutoff) if row["kafka_offset"] >= from_offset]
    return {view.name: view_rows(firsts, view) for view in VIEWS}


def test_incremental_micro_batches_equal_a_from_scratch_computation() -> None:
    items = valid_records(3000)
    state = PartitionState(0, open_start=0, next_offset=0, cutoff=0)
    connection, counted = duck.connect(), counter()
    rng = random.Random(1)
    position = 0
    while position < len(items):
        size = rng.randint(1, 400)
        take(state, counted, items[position : position + size])
        if rng.random() < 0.5:  # settle at random points: merges of merges
            state.settle(connection)
        position += size
    state.settle(connection)
    assert len(counted.speed) < len(items), "the sample has redeliveries"
    assert rows_of(state) == expected(items)


def test_restarting_inside_the_state_recounts_exactly() -> None:
    items = valid_records(2000)
    connection = duck.connect()
    state, counted = PartitionState(0, open_start=0, next_offset=0, cutoff=0), counter()
    take(state, counted, items)
    state.settle(connection)
    state.restart_at(1200)  # a batch cutoff that fell inside the segment
    counted.speed.drop(0, from_offset=1200)
    take(state, counted, [item for item in items if item.offset >= 1200])
    state.settle(connection)
    assert rows_of(state) == expected(items, from_offset=1200), "events first seen below 1200 stay excluded"


def test_publish_and_restore_round_trip(tmp_path: Path) -> None:
    items = valid_records(1500)
    connection = duck.connect()
    state, counted = PartitionState(0, open_start=0, next_offset=0, cutoff=0), counter()
    take(state, counted, items[:700])
    state.settle(connection)
    sealed = publish(state, tmp_path, seal=True)
    take(state, counted, items[700:])
    state.settle(connection)
    publish(state, tmp_path, seal=False)
    snapshot = read_snapshot(tmp_path, 0)
    assert snapshot is not None and snapshot.sequence == 2 and sealed.sequence == 1
    assert [(s.start, s.sealed) for s in snapshot.segments] == [(0, True), (items[699].offset + 1, False)]
    assert snapshot.covers_from(0) and snapshot.next_offset == items[-1].offset + 1
    restored = restore(tmp_path, 0, cutoff=0)
    assert restored is not None and restored.next_offset == state.next_offset
    ids = counted_ids(tmp_path, restored)
    assert ids.num_rows == len(counted.speed), "every id counted comes back, once"
    assert counted.speed.contains(ids.column("event_id")).all()
    assert rows_of(restored) == rows_of(state), "the open segment comes back as it was published"
    stale = PartitionState(0, open_start=0, next_offset=0, cutoff=0, sequence=1)
    with pytest.raises(LostPartitionError):
        publish(stale, tmp_path, seal=False)


def test_a_restore_lists_views_declared_since_and_skips_views_no_longer_declared(tmp_path: Path) -> None:
    """What view evolution starts from: the restored state says which views it lacks (so its worker
    rebuilds from the cutoff) and ignores the rows of a view removed from the declarations."""
    items = valid_records(600)
    state, counted = PartitionState(0, open_start=0, next_offset=0, cutoff=0), counter()
    take(state, counted, items)
    state.settle(duck.connect())
    publish(state, tmp_path, seal=False)
    path = snapshot_path(tmp_path, 0, 1)
    written = json.loads(path.read_text())
    del written["views"]  # as written before snapshots listed their views
    folder = partition_root(tmp_path, 0) / written["segments"][0]["folder"]
    shutil.copy(folder / f"{VIEWS[0].name}.parquet", folder / "a_removed_view.parquet")
    written["segments"][0]["views"].append("a_removed_view")
    path.write_text(json.dumps(written))
    restored = restore(tmp_path, 0, cutoff=0)
    assert restored is not None and "a_removed_view" not in restored.open_rows
    assert restored.missing_views == tuple(name for name in VIEW_NAMES if name not in FIRST_VIEWS)
    assert restored.missing_views, "a view declared after the first three is missing from such a snapshot"


def test_partitions_settled_together_equal_each_settled_alone() -> None:
    items = valid_records(1200)
    first, second = items[:600], [FakeRecord(r.value, r.offset, partition=1) for r in items[600:]]
    connection = duck.connect()
    alone = [PartitionState(p, open_start=0, next_offset=0, cutoff=0) for p in (0, 1)]
    together = [PartitionState(p, open_start=0, next_offset=0, cutoff=0) for p in (0, 1)]
    counters = {id(alone): counter(), id(together): counter()}
    for chunk in range(0, 600, 150):
        for states in (alone, together):
            take(states[0], counters[id(states)], first[chunk : chunk + 150])
            take(states[1], counters[id(states)], second[chunk : chunk + 150])
        alone[0].settle(connection)
        alone[1].settle(connection)
        settle_all(together, connection)
    assert [rows_of(s) for s in together] == [rows_of(s) for s in alone]
    assert merged_rows(together) == expected(items), "the two partitions together count each event once"


def merged_rows(states: list[PartitionState]) -> dict[str, list[tuple[Any, ...]]]:

    connection = duck.connect()
    merged = {}
    for view in VIEWS:
        parts = [s.open_rows[view.name] for s in states if view.name in s.open_rows]
        connection.register("parts", pa.concat_tables(parts))
        merged[view.name] = served_rows(view, connection.sql(view.merge_sql("parts")).to_arrow_table())
        connection.unregister("parts")
    return merged


def test_ids_of_an_open_segment_published_in_steps_come_back_whole(tmp_path: Path) -> None:
    items = valid_records(900)
    connection = duck.connect()
    state, counted = PartitionState(0, open_start=0, next_offset=0, cutoff=0), counter()
    for chunk in range(0, 900, 300):  # three publishes of one open segment: ids written once each
        take(state, counted, items[chunk : chunk + 300])
        state.settle(connection)
        publish(state, tmp_path, seal=False)
    restored = restore(tmp_path, 0, cutoff=0)
    assert restored is not None
    fresh_counter = counter()
    ids = counted_ids(tmp_path, restored)
    fresh_counter.speed.add(ids.column("event_id"), 0, ids.column("kafka_offset").to_numpy())
    assert len(fresh_counter.speed) == len(counted.speed) > 600
    redelivered = [FakeRecord(r.value, 900 + r.offset, 0) for r in items[:300]]
    take(restored, fresh_counter, redelivered)  # a redelivery of the first third counts nothing
    restored.settle(connection)
    assert rows_of(restored) == rows_of(state) == expected(items)


def test_copies_on_other_partitions_count_once_and_the_batch_index_is_consulted(tmp_path: Path) -> None:
    """The dedup authority across partitions, and against what a batch version counted below its cutoff."""
    items = valid_records(600)
    counted = counter(tmp_path)
    on_zero = counted.claim(0, decoded(items[:400])).rows
    resent = [FakeRecord(r.value, r.offset, partition=3) for r in items[200:600]]  # a keyless resend elsewhere
    on_three = counted.claim(3, decoded(resent)).rows
    copies = set(on_zero.column("event_id").to_pylist()) & set(on_three.column("event_id").to_pylist())
    assert not copies, "an event counted on partition 0 is not counted again on partition 3"
    assert on_zero.num_rows + on_three.num_rows == len({r["event_id"] for r in decoded(items).to_pylist()})


def test_a_copy_of_an_unpublished_count_on_another_partition_waits_until_it_is_published() -> None:
    """Dropping a copy in favour of a count nobody can see yet would leave the event uncounted if that
    partition were lost before its publish; the copy's partition stops there instead."""
    items = valid_records(600)
    counted = counter()
    on_zero = counted.claim(0, decoded(items[:400]), unpublished_from={0: 0, 3: 0})
    assert on_zero.stopped_at is None and on_zero.rows.num_rows > 300
    counted_on_zero = set(on_zero.rows.column("event_id").to_pylist())
    resent = decoded([FakeRecord(r.value, r.offset + 1000, partition=3) for r in items[150:600]])
    first_copy = next(r["kafka_offset"] for r in resent.to_pylist() if r["event_id"] in counted_on_zero)

    waiting = counted.claim(3, resent, unpublished_from={0: 0, 3: 1150})
    assert waiting.stopped_at == first_copy == 1150
    assert waiting.rows.num_rows == 0, "nothing from the copy on is taken"

    partly = counted.claim(3, resent, unpublished_from={0: 250, 3: 1150})  # partition 0 published up to 250
    assert partly.stopped_at is not None and 1250 <= partly.stopped_at < 1400
    assert all(r["kafka_offset"] < partly.stopped_at for r in partly.rows.to_pylist())
    assert not counted_on_zero & set(partly.rows.column("event_id").to_pylist())

    counted.speed.drop(3)  # what the partial claim took, to claim it again
    published = counted.claim(3, resent, unpublished_from={0: 400, 3: 1150})
    assert published.stopped_at is None
    taken = set(published.rows.column("event_id").to_pylist())
    assert not taken & counted_on_zero and taken | counted_on_zero == {
        r["event_id"] for r in decoded(items).to_pylist()
    }


def test_a_rebuild_keeps_few_events_in_memory_and_counts_spilled_ones_exactly(tmp_path: Path) -> None:
    """A rebuild's raw events beyond a limit wait on disk; copies another worker publishes meanwhile
    are taken out of spilled and in-memory events alike, and the settled rows equal a recount."""
    items = valid_records(2000)
    connection, counted = duck.connect(), counter()
    state = PartitionState(0, open_start=0, next_offset=0, cutoff=0, hold_until=len(items))
    for chunk in range(0, len(items), 150):
        take(state, counted, items[chunk : chunk + 150])
        state.spill_if_large(tmp_path, limit=200)
        assert state.pending_rows < 200 + 150, "a rebuild holds fewer than the limit (and a micro-batch) in memory"
    assert state.spill is not None and len(state.spill.files) >= 5
    ids_at = {row["kafka_offset"]: row["event_id"] for row in decoded(items).to_pylist()}
    published_elsewhere = {ids_at[offset] for offset in [*range(10, 60), *range(1900, 1950)]}  # spilled, in memory
    elsewhere = IdSet()
    elsewhere.add(pa.array(sorted(published_elsewhere)))
    dropped = state.drop_pending(elsewhere.contains)
    assert dropped == len(published_elsewhere)
    state.hold_until = 0  # back where it had published: settled and published now
    settle_all([state], connection)
    assert not list((tmp_path / "partition-0").glob("*.arrow")), "read back, the files are gone"
    kept = [item for item in items if ids_at.get(item.offset) not in published_elsewhere]
    assert rows_of(state) == expected(kept)


def test_a_restart_forgets_what_a_rebuild_spilled(tmp_path: Path) -> None:
    items = valid_records(600)
    state, counted = PartitionState(0, open_start=0, next_offset=0, cutoff=0, hold_until=600), counter()
    take(state, counted, items[:300])
    state.spill_if_large(tmp_path, limit=100)
    assert list((tmp_path / "partition-0").glob("*.arrow"))
    state.restart_at(0)
    assert not list((tmp_path / "partition-0").glob("*.arrow"))
    counted.speed.drop(0, from_offset=0)
    take(state, counted, items)
    state.hold_until = 0
    state.settle(duck.connect())
    assert rows_of(state) == expected(items)


@pytest.mark.parametrize("leftover", ["torn", "complete"])
def test_a_publish_a_crash_interrupted_leaves_nothing_the_next_attempt_reads(tmp_path: Path, leftover: str) -> None:
    """A worker killed inside a publish leaves the folder of a sequence CURRENT never named; the next
    owner may publish that same folder (same offsets and sequence, as a replay does). What the dead
    attempt wrote there must not count: neither a torn ids file nor ids this attempt did not count."""
    items = valid_records(900)
    connection = duck.connect()
    state, counted = PartitionState(0, open_start=0, next_offset=0, cutoff=0), counter()
    take(state, counted, items[:300])
    state.settle(connection)
    publish(state, tmp_path, seal=False)
    redelivered = [FakeRecord(r.value, 300 + r.offset, 0) for r in items[:300]]
    take(state, counted, redelivered)  # offsets advance, nothing new counted: this publish writes no ids file
    state.settle(connection)
    dead = partition_root(tmp_path, 0) / f"segments/{state.open_start}-{state.next_offset}-{state.sequence + 1}"
    dead.mkdir(parents=True)
    ids_file = dead / f"ids-{state.sequence + 1}.parquet"
    if leftover == "torn":
        ids_file.write_bytes(b"PAR1")  # killed just after the header
    else:
        foreign = pa.table({"event_id": pa.array([b"f" * 16], pa.binary(16)), "kafka_offset": [301]})
        pq.write_table(foreign.cast(ID_SCHEMA), ids_file)  # the dead attempt had counted an id this one did not
    publish(state, tmp_path, seal=False)
    take(state, counted, [FakeRecord(r.value, 300 + r.offset, 0) for r in items[300:]])
    state.settle(connection)
    publish(state, tmp_path, seal=True)  # reads the ids of every earlier publish of the segment
    restored = restore(tmp_path, 0, cutoff=0)
    assert restored is not None
    ids = counted_ids(tmp_path, restored)
    assert ids.num_rows == len(counted.speed), "exactly the ids counted, none of the dead attempt's"
    assert counted.speed.contains(ids.column("event_id")).all()
    assert rows_of(restored) == rows_of(state)
