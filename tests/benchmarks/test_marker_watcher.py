"""The freshness benchmarks' marker watcher: a process of its own that notes when each marker is first
seen and when each speed publish landed, and stops once every marker sent has been seen."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.markers import MarkerWatcher
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import CURRENT, PartitionSnapshot, partition_root, snapshot_path
from lambda_contracts.views import VIEW_NAMES

pytestmark = pytest.mark.unit


class DevicesInAFile:
    """A poll that sees the devices listed in a file (picklable: it crosses into the watcher process)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, settings: Settings) -> list[str]:
        return self.path.read_text().split() if self.path.exists() else []

    def close(self) -> None:
        self.path.with_suffix(".closed").write_text("closed by the watcher\n")


def publish(settings: Settings, partition: int, next_offset: int, published_at: datetime) -> None:
    snapshot = PartitionSnapshot(
        partition, 1, next_offset, [], published_at.isoformat(), cutoff=0, reconciled=0, valid_from=0, views=VIEW_NAMES
    )
    path = snapshot_path(settings.speed_views_path, partition, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(snapshot.to_json())
    (partition_root(settings.speed_views_path, partition) / CURRENT).write_text("1\n")


def test_the_watcher_sees_each_marker_and_each_publish_and_ends_once_all_sent_are_seen(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    visible = tmp_path / "visible.txt"
    watcher = MarkerWatcher(DevicesInAFile(visible), settings)
    watcher.start()
    try:
        before = time.monotonic()
        published_at = datetime.now(UTC) - timedelta(seconds=1)
        publish(settings, 1, 42, published_at)
        visible.write_text("bench-000000\n")
        visible.write_text("bench-000000\nbench-000001\n")
        seen, publishes = watcher.finish(["bench-000000", "bench-000001"])
    finally:
        watcher.stop()
    assert set(seen) == {"bench-000000", "bench-000001"}
    assert before <= seen["bench-000000"] <= seen["bench-000001"] <= time.monotonic()
    landed = publishes.first_past(1, 41)
    assert landed is not None and abs(landed - (before - 1)) < 0.5, "the publish's own time, on the monotonic clock"
    assert publishes.first_past(1, 42) is None and publishes.first_past(0, 0) is None
    assert visible.with_suffix(".closed").exists(), "the watcher closes its poll"
