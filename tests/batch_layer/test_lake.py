"""The lake's compare-and-swap on a real Delta table: offsets move only from what a writer expects."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_layer.lake import FencedError, Lake, LakeLayoutError
from lambda_contracts.columns import LAKE_SCHEMA, events_to_arrow, with_ingest_time
from lambda_contracts.intake import split
from lambda_contracts.serde import JsonSerde
from sources.knobs import Knobs
from sources.simulators import IotSensors
from tests.fakes import FakeRecord

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 24, tzinfo=UTC)


def rows(partition: int, offsets: range) -> pa.Table:
    records = IotSensors(Knobs(seed=partition), JsonSerde(), NOW).records()
    fakes = [FakeRecord(next(records).value, offset, partition) for offset in offsets]
    accepted, rejected = split(fakes, JsonSerde(), rejected_by="test")
    assert not rejected
    return with_ingest_time(events_to_arrow(accepted), NOW)


def test_offsets_are_committed_with_the_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", "events")
    assert lake.committed_offsets([0, 1]) == {0: 0, 1: 0}
    lake.append(rows(0, range(0, 5)), expected={0: 0}, next_offsets={0: 5})
    lake.append(rows(1, range(0, 3)), expected={1: 0}, next_offsets={1: 3})
    assert lake.committed_offsets([0, 1, 2]) == {0: 5, 1: 3, 2: 0}
    table = lake.table()
    assert table is not None
    data = table.to_pyarrow_table()
    assert data.schema == LAKE_SCHEMA
    assert sorted(zip(data["kafka_partition"].to_pylist(), data["kafka_offset"].to_pylist(), strict=True)) == [
        *[(0, o) for o in range(5)],
        *[(1, o) for o in range(3)],
    ]
    assert table.metadata().partition_columns == ["event_date", "kafka_partition"], "runs read only their files"


def test_a_run_finds_exactly_the_files_holding_its_offsets(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", "events")
    lake.append(rows(0, range(0, 5)), expected={0: 0}, next_offsets={0: 5})
    lake.append(rows(1, range(0, 5)), expected={1: 0}, next_offsets={1: 5})
    lake.append(rows(0, range(5, 9)), expected={0: 5}, next_offsets={0: 9})
    table = lake.table()
    assert table is not None

    def offsets(files: list[str]) -> set[tuple[int, int]]:
        data = pa.concat_tables([pq.read_table(f, columns=["kafka_offset"]) for f in files])
        partitions = {int(f.split("kafka_partition=")[1].split("/")[0]) for f in files}
        return {(p, o) for p in partitions for o in data.column("kafka_offset").to_pylist()}

    assert offsets(lake.files_with_offsets(table, {0: (5, 9)})) == {(0, o) for o in range(5, 9)}
    assert offsets(lake.files_with_offsets(table, {1: (3, 5)})) == {(1, o) for o in range(5)}
    assert lake.files_with_offsets(table, {0: (9, 20), 1: (5, 5)}) == []
    written = table.to_pyarrow_table(columns=["event_date"]).column("event_date").to_pylist()
    assert lake.days(table) == sorted({d.isoformat() for d in written}), "from the log, no data scanned"


def test_a_lake_of_another_layout_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "lake"), rows(0, range(0, 2)), partition_by=["event_date"])
    with pytest.raises(LakeLayoutError, match="fresh LAMBDA_DATA_DIR"):
        Lake(tmp_path / "lake", "events").ensure_table()


def test_a_stale_writer_is_fenced_off(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", "events")
    lake.append(rows(0, range(0, 5)), expected={0: 0}, next_offsets={0: 5})
    with pytest.raises(FencedError) as fenced:
        lake.append(rows(0, range(0, 5)), expected={0: 0}, next_offsets={0: 5})
    assert fenced.value.partitions == {0: 5}
    table = lake.table()
    assert table is not None and table.to_pyarrow_table().num_rows == 5, "the stale rows were not written"


def test_offsets_advance_without_rows(tmp_path: Path) -> None:
    """A batch of only invalid records still moves the lake forward (they are in the dead-letter topic)."""
    lake = Lake(tmp_path / "lake", "events")
    lake.append(LAKE_SCHEMA.empty_table(), expected={3: 0}, next_offsets={3: 40})
    assert lake.committed_offsets([3]) == {3: 40}


def test_a_batch_run_before_the_lake_exists_publishes_nothing(tmp_path: Path) -> None:
    from batch_layer.batch_job import run_batch
    from lambda_contracts.manifest import current_version
    from lambda_contracts.settings import Settings

    def no_spark() -> None:
        raise AssertionError("nothing to compute, so no Spark session")

    settings = Settings(data_dir=tmp_path)
    assert run_batch(settings, "early-run", spark=no_spark).version == 0  # type: ignore[arg-type]
    assert current_version(settings.batch_views_path) == 0


def test_cutoffs_fall_on_sealed_speed_boundaries(tmp_path: Path) -> None:
    from batch_layer.plan import choose_cutoff
    from lambda_contracts.plumbing.files import write_atomically
    from lambda_contracts.settings import Settings
    from lambda_contracts.speed_snapshot import PartitionSnapshot, Segment

    settings = Settings(data_dir=tmp_path)
    assert choose_cutoff(settings, 0, previous=10, lake_offset=500) == 500, "no speed layer: what the lake holds"
    snapshot = PartitionSnapshot(
        partition=0,
        sequence=1,
        next_offset=640,
        segments=[Segment(100, 250, "a"), Segment(250, 400, "b"), Segment(400, 640, "c", sealed=False)],
        published_at=datetime.now(UTC).isoformat(),
        cutoff=100,
    )
    root = settings.speed_views_path / "p0"
    write_atomically(root / "snapshots" / "000000000001.json", snapshot.to_json())
    write_atomically(root / "CURRENT", "1\n")
    assert choose_cutoff(settings, 0, previous=100, lake_offset=500) == 400, "not inside the open segment"
    assert choose_cutoff(settings, 0, previous=100, lake_offset=300) == 250
    assert choose_cutoff(settings, 0, previous=100, lake_offset=120) == 100, "no boundary yet: stay"
    stale = Settings(data_dir=tmp_path, speed_stale_after_seconds=1e-6)
    assert choose_cutoff(stale, 0, previous=100, lake_offset=500) == 500, "a dead speed layer does not stall batch"
