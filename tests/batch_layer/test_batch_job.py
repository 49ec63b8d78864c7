"""Batch views from a real lake with real Spark: equal to an independent recomputation, idempotent."""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from batch_layer.lake import Lake
from batch_layer.maintenance import compact_lake
from lambda_contracts.columns import events_to_arrow, with_ingest_time
from lambda_contracts.intake import Accepted
from lambda_contracts.manifest import Manifest, current_version
from lambda_contracts.serde import JsonSerde, Rejection
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEWS
from sources.run import build_simulators
from sources.simulators import merged_records
from tests.flows import produce, sink_everything
from tests.oracle import first_copies, parquet_rows, view_rows

pytestmark = pytest.mark.integration


def assert_matches_oracle(settings: Settings, manifest: Manifest) -> None:
    lake_rows = DeltaTable(str(settings.lake_path), version=manifest.lake_version).to_pyarrow_table().to_pylist()
    events = first_copies(lake_rows, manifest.cutoffs)
    root = settings.batch_views_path
    for view in VIEWS:
        expected = view_rows(events, view)
        assert expected, f"the sample has rows for {view.name}"
        assert parquet_rows([str(root / f) for f in manifest.files(view.name)], view) == expected, view.name


def test_batch_views_equal_an_independent_recompute_and_runs_are_idempotent(
    kafka: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    settings = kafka.model_copy(
        update={"data_dir": tmp_path, "lake_flush_seconds": 0.2, "lake_sink_group": f"sink-{kafka.events_topic}"}
    )
    midnight = datetime(2026, 11, 24, tzinfo=UTC)
    produce(settings, seed=1, start=midnight + timedelta(minutes=20), count=3000)
    sink_everything(settings)
    first = run_batch(settings, "run-1", lambda: spark)
    assert first.version == 1
    assert {"2026-11-23", "2026-11-24"} <= {p[:10] for p in first.touched}, "late events reach into the day before"
    assert first.counted > 0 and not first.recomputed_days, "an advance counts new records, it rebuilds no day"
    assert_matches_oracle(settings, first)

    produce(settings, seed=2, start=midnight + timedelta(hours=1), count=3000)
    sink_everything(settings)
    second = run_batch(settings, "run-2", lambda: spark)
    assert second.version == 2 and second.base_version == 1
    assert all(second.cutoffs[p] >= first.cutoffs[p] for p in first.cutoffs)
    assert_matches_oracle(settings, second)
    untouched = set(first.ids) - set(second.touched)
    assert untouched and all(second.ids[p] == first.ids[p] for p in untouched), "untouched periods keep their files"

    files_before = sorted(p for p in settings.batch_views_path.rglob("*") if p.is_file())
    again = run_batch(settings, "run-2", lambda: spark)
    assert again == second, "the same run id publishes nothing new"
    assert current_version(settings.batch_views_path) == 2
    assert sorted(p for p in settings.batch_views_path.rglob("*") if p.is_file()) == files_before

    everything = run_batch(settings, "recompute-all", lambda: spark, recompute=(None, None))
    assert everything.version == 3 and everything.cutoffs == second.cutoffs
    assert_same_views(settings, everything, second)


def assert_same_views(settings: Settings, recomputed: Manifest, advanced: Manifest) -> None:
    """Row for row, and the same counted ids per period."""
    root = settings.batch_views_path
    for view in VIEWS:
        rows = parquet_rows([str(root / f) for f in recomputed.files(view.name)], view)
        assert rows == parquet_rows([str(root / f) for f in advanced.files(view.name)], view), view.name
    assert id_sets(settings, recomputed) == id_sets(settings, advanced)


def id_sets(settings: Settings, manifest: Manifest) -> dict[str, set[str]]:
    root = settings.batch_views_path
    return {
        period: set(pq.read_table([str(root / f) for f in files], columns=["event_id"]).column(0).to_pylist())
        for period, files in manifest.ids.items()
    }


def lake_history(settings: Settings, rng: random.Random, chunks: int) -> Iterator[None]:
    """Append simulated records to the lake chunk by chunk: late events up to two days, redeliveries."""
    lake = Lake(settings.lake_path, settings.events_topic)
    simulators = build_simulators(
        serde=JsonSerde(),
        start=datetime(2026, 11, 24, 18, tzinfo=UTC),
        seed=rng.randrange(1000),
        late_share=0.4,
        max_lateness=timedelta(days=2),
        duplicate_share=0.08,
        malformed_share=0.0,
    )
    records = merged_records(simulators)
    offsets = dict.fromkeys(range(settings.topic_partitions), 0)
    for _ in range(chunks):
        accepted = []
        for record in itertools.islice(records, rng.randrange(300, 1500)):
            partition = zlib.crc32(record.key) % settings.topic_partitions  # redeliveries land where the original did
            event = JsonSerde().decode(record.value)
            assert not isinstance(event, Rejection)
            accepted.append(Accepted(partition, offsets[partition], event, record.value))
            offsets[partition] += 1
        before = {p: o - sum(1 for a in accepted if a.partition == p) for p, o in offsets.items()}
        lake.append(with_ingest_time(events_to_arrow(accepted), datetime.now(UTC)), before, dict(offsets))
        yield


@pytest.mark.parametrize(("seed", "max_id_runs"), [(1, 8), (2, 2)])
def test_incremental_runs_publish_what_a_full_recompute_publishes(
    spark: SparkSession, tmp_path: Path, seed: int, max_id_runs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random histories: late events over days, redeliveries, re-runs, lake compaction between runs,
    and (with few id runs allowed) the id index merged size-tiered along the way."""
    monkeypatch.setattr("batch_layer.compute.MAX_ID_RUNS", max_id_runs)
    rng = random.Random(seed)
    settings = Settings(data_dir=tmp_path, spark_shuffle_partitions=2)
    advanced = None
    for number, _ in enumerate(lake_history(settings, rng, chunks=6)):
        if rng.random() < 0.4:
            compact_lake(settings)
        advanced = run_batch(settings, f"run-{number}", lambda: spark)
        if rng.random() < 0.3:
            assert run_batch(settings, f"run-{number}", lambda: spark) == advanced, "a re-run publishes nothing new"
        assert_matches_oracle(settings, advanced)
    assert advanced is not None
    recomputed = run_batch(settings, "recompute-all", lambda: spark, recompute=(None, None))
    assert recomputed.cutoffs == advanced.cutoffs
    assert_same_views(settings, recomputed, advanced)


@pytest.mark.unit
def test_id_runs_are_merged_size_tiered_so_big_old_runs_stay() -> None:
    from batch_layer.compute import _tail_to_merge

    assert _tail_to_merge([1_000_000, *[15_000] * 8]) == 1, "the big run stays, the eight small ones merge"
    assert _tail_to_merge([1_000_000, 120_000, *[15_000] * 8]) == 1, "a run at most twice what follows joins"
    assert _tail_to_merge([1_000_000, 400_000, *[15_000] * 8]) == 2
    assert _tail_to_merge([10] * 9) == 0, "equal runs merge into one"


def test_spark_keeps_the_first_copy_by_partition_then_offset(spark: SparkSession) -> None:
    """Copies on several partitions, in any order of arrival, with offsets far beyond 2**40: the copy at
    the lowest (partition, offset) is kept, as the oracle's rule says, and every other row once."""
    from batch_layer.compute import first_copies as spark_first_copies

    rng = random.Random(3)
    far = 2**62
    ranges = {0: (far, far + 40), 1: (5, 45), 2: (0, 40), 3: (far - 10, far + 30)}
    free = {p: list(range(start, end)) for p, (start, end) in ranges.items()}
    for offsets in free.values():
        rng.shuffle(offsets)
    rows = []
    for number in range(90):  # some events once, some with copies on the same or other partitions
        for partition in rng.sample(sorted(ranges), k=rng.choice((1, 1, 2, 3))):
            if free[partition]:
                offset = free[partition].pop()
                rows.append({"event_id": f"e{number}", "kafka_partition": partition, "kafka_offset": offset})
    rng.shuffle(rows)
    frame = spark.createDataFrame(rows, "event_id STRING, kafka_partition INT, kafka_offset BIGINT")
    kept = {_copy(r.asDict()) for r in spark_first_copies(frame, ranges).collect()}
    expected = {_copy(r) for r in first_copies(rows)}
    assert len(expected) < len(rows), "the sample has copies"
    assert {p for _, p, _ in expected} == set(ranges), "first copies on every partition"
    assert kept == expected


def _copy(row: Mapping[str, Any]) -> tuple[str, int, int]:
    return row["event_id"], row["kafka_partition"], row["kafka_offset"]
