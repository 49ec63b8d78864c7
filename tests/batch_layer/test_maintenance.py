"""Maintenance is safe while the sink writes: compaction keeps every row and every offset."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batch_layer.lake import Lake
from batch_layer.lake_sink import LakeSink
from batch_layer.maintenance import compact_lake, prune_batch_views, vacuum_lake
from lambda_contracts.manifest import Manifest, manifest_path
from lambda_contracts.serde import JsonSerde, Rejection
from lambda_contracts.settings import Settings
from sources.producer import BatchingProducer
from sources.run import build_simulators, run_simulation
from tests.flows import read_topic, wait_until_lake_complete


@pytest.mark.integration
def test_compaction_and_vacuum_while_the_sink_writes(kafka: Settings, tmp_path: Path) -> None:
    settings = kafka.model_copy(
        update={"data_dir": tmp_path, "lake_flush_seconds": 0.1, "lake_sink_group": f"sink-{kafka.events_topic}"}
    )
    simulators = build_simulators(
        ["web", "sensor"], rate=300.0, serde=JsonSerde(), start=datetime.now(UTC), seed=6, malformed_share=0.01
    )
    producing = threading.Thread(
        target=run_simulation,
        args=(simulators, BatchingProducer(settings, settings.events_topic)),
        kwargs={"duration_s": 6.0, "realtime": True},
    )
    stop = threading.Event()
    sink = threading.Thread(target=LakeSink(settings).run, args=(stop,))
    producing.start()
    sink.start()
    compactions = []
    try:
        while producing.is_alive():
            if Lake(settings.lake_path, settings.events_topic).table() is not None:
                compactions.append(compact_lake(settings).detail)
            time.sleep(0.5)  # compact again and again while commits keep landing
        producing.join()
        wait_until_lake_complete(settings)
    finally:
        stop.set()
        sink.join()
    vacuum_lake(settings)

    table = Lake(settings.lake_path, settings.events_topic).table()
    assert table is not None
    assert any(int(str(c.get("numFilesRemoved", 0))) > 0 for c in compactions), (
        "compaction rewrote files during the run"
    )
    records = read_topic(settings, settings.events_topic)
    valid = {(r.partition, r.offset) for r in records if not isinstance(JsonSerde().decode(r.value), Rejection)}
    rows = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
    coordinates = list(zip(rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist(), strict=True))
    assert len(coordinates) == len(set(coordinates)) and set(coordinates) == valid
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    assert Lake(settings.lake_path, settings.events_topic).committed_offsets(ends) == ends


def make_version(root: Path, version: int, folder: str, age_minutes: float, ids_from: str | None = None) -> None:
    segment = root / "segments" / folder / "page_views_per_minute" / "part=2026-11-24T10"
    segment.mkdir(parents=True)
    (segment / "part-0.parquet").write_bytes(b"x")
    files = [str((segment / "part-0.parquet").relative_to(root))]
    ids = {"2026-11-24T10": [f"segments/{ids_from}/ids/part=2026-11-24T10/part-0.parquet"]} if ids_from else {}
    manifest = Manifest(
        version,
        f"run-{version}",
        "",
        "events",
        0,
        {0: version},
        {"page_views_per_minute": {"2026-11-24T10": files}},
        ids=ids,
    )
    manifest_path(root, version).parent.mkdir(parents=True, exist_ok=True)
    manifest_path(root, version).write_text(manifest.to_json())
    (root / "CURRENT").write_text(f"{version}\n")
    plan = root / "plans" / f"run-{version}.json"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(f'{{"version": {version}}}')
    old = time.time() - age_minutes * 60
    for path in (root / "segments" / folder, manifest_path(root, version), plan):
        os.utime(path, (old, old))


@pytest.mark.unit
def test_pruning_keeps_recent_versions_and_young_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, batch_keep_versions=2, batch_prune_min_age_minutes=30)
    root = settings.batch_views_path
    for version in range(1, 5):
        make_version(root, version, f"{version:06d}-aaaa", age_minutes=120, ids_from="000002-aaaa")
    (root / "segments" / "000005-orphan").mkdir()  # an unpublished attempt, still young
    report = prune_batch_views(settings)
    kept = ["000002-aaaa", "000003-aaaa", "000004-aaaa", "000005-orphan"]
    assert sorted(p.name for p in (root / "segments").iterdir()) == kept, "ids still counted keep their folder"
    assert sorted(p.name for p in (root / "manifests").iterdir()) == ["000003.json", "000004.json"]
    assert sorted(p.name for p in (root / "plans").iterdir()) == ["run-3.json", "run-4.json"]
    assert report.detail == {"segment_folders_removed": 1, "oldest_kept_version": 3}


@pytest.mark.unit
def test_vacuum_retention_cannot_be_set_below_an_hour() -> None:
    with pytest.raises(ValueError, match="lake_vacuum_retention_hours"):
        Settings(lake_vacuum_retention_hours=0)
    assert timedelta(hours=Settings().lake_vacuum_retention_hours) == timedelta(days=7)
