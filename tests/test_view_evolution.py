"""A view declared after the platform published is backfilled by both layers, then served; never half.

The published state is made what a platform that knew only the first three views wrote (manifests
and snapshots without view lists, no files of the newer views). Serving then refuses the new views
with the reason, while the others stay exact; the speed worker rebuilds its partitions from the
batch cutoff, the next batch run recomputes the lake once, and every view, new ones included,
equals the recompute of every record, through the Python API and the live views alike.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from lambda_contracts.manifest import current_version, manifest_path, read_current
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import CURRENT, partition_root, snapshot_path
from lambda_contracts.views import FIRST_VIEWS, VIEWS
from serving_layer.live import LiveViews
from serving_layer.query import query
from speed_layer.worker import SpeedWorker
from tests.flows import (
    produce,
    sink_everything,
    speed_reflected,
    speed_snapshots,
    wait_for,
    whole_platform_settings,
)
from tests.oracle import compare

pytestmark = pytest.mark.integration

NEW = [view.name for view in VIEWS if view.name not in FIRST_VIEWS]


def as_written_before_the_new_views(settings: Settings) -> None:
    """Rewrite the current batch manifest and speed snapshots as the platform before ``NEW`` wrote them."""
    path = manifest_path(settings.batch_views_path, current_version(settings.batch_views_path))
    manifest = json.loads(path.read_text())
    del manifest["views"]
    for name in NEW:
        manifest["segments"].pop(name, None)
    path.write_text(json.dumps(manifest))
    for partition in range(settings.topic_partitions):
        root = partition_root(settings.speed_views_path, partition)
        sequence = int((root / CURRENT).read_text())
        snapshot = json.loads(snapshot_path(settings.speed_views_path, partition, sequence).read_text())
        del snapshot["views"]
        for segment in snapshot["segments"]:
            segment["views"] = [v for v in segment["views"] if v not in NEW]
            for name in NEW:
                (root / segment["folder"] / f"{name}.parquet").unlink(missing_ok=True)
        snapshot_path(settings.speed_views_path, partition, sequence).write_text(json.dumps(snapshot))


def run_speed_until(settings: Settings, done: Callable[[], bool], what: str) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=SpeedWorker(settings).run, args=(stop,))
    worker.start()
    try:
        wait_for(done, 90, what)
    finally:
        stop.set()
        worker.join()


def not_ready_reason(settings: Settings, view: str) -> str:
    with pytest.raises(duckdb.Error, match=f"view {view} is not ready") as refused:
        query(settings, f"SELECT * FROM {view}")
    return str(refused.value)


def test_a_new_view_is_backfilled_by_both_layers_and_served_only_once_complete(
    kafka: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    settings = whole_platform_settings(kafka, tmp_path)
    produce(settings, seed=61, start=datetime(2026, 11, 20, 9, tzinfo=UTC), count=3000)
    sink_everything(settings)
    run_speed_until(settings, lambda: speed_reflected(settings) >= 3000, "the speed layer reflecting every record")
    run_batch(settings, "before-the-new-views", lambda: spark)
    produce(settings, seed=62, start=datetime(2026, 11, 20, 11, tzinfo=UTC), count=1500)
    sink_everything(settings)
    run_speed_until(settings, lambda: speed_reflected(settings) >= 4500, "the speed layer reflecting every record")
    as_written_before_the_new_views(settings)

    live = LiveViews(settings)
    live.refresh()
    for name in NEW:
        assert "batch version 1 has no rows of it yet" in not_ready_reason(settings, name)
        with pytest.raises(duckdb.Error, match=f"view {name} is not ready"):
            live.session().execute(f"SELECT count(*) FROM {name}").fetchall()
    for name in FIRST_VIEWS:  # the views both layers hold are served meanwhile
        assert query(settings, f"SELECT count(*) AS n FROM {name}").column("n")[0].as_py() > 0

    run_speed_until(
        settings,
        lambda: all(s and s.views for s in speed_snapshots(settings)),
        "every partition republished with the new views (rebuilt from the cutoff)",
    )
    for name in NEW:
        assert "batch version 1 has no rows of it yet" in not_ready_reason(settings, name), "speed alone is not enough"

    published = run_batch(settings, "backfill", lambda: spark)
    assert published.recomputed_days, "the run recomputed the lake to backfill the new views"
    assert read_current(settings.batch_views_path).views == [view.name for view in VIEWS]
    run_speed_until(
        settings,
        lambda: all(s and s.reconciled == published.version for s in speed_snapshots(settings)),
        "the speed layer reconciled with the backfilled version",
    )
    compare(settings)  # every view, the new ones too, equals the recompute of what the snapshot reflects
    assert live.refresh()
    served = live.session()
    for name in NEW:
        assert served.execute(f"SELECT count(*) FROM {name}").fetchone()[0] > 0  # type: ignore[index]
    live.close()
