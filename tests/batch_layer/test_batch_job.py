"""Batch views from a real lake with real Spark: equal to an independent recomputation, idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from lambda_contracts.manifest import Manifest, current_version
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEWS
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
    assert {"2026-11-23", "2026-11-24"} <= set(first.recomputed_days), "late events reach into the day before"
    assert_matches_oracle(settings, first)

    produce(settings, seed=2, start=midnight + timedelta(hours=1), count=3000)
    sink_everything(settings)
    second = run_batch(settings, "run-2", lambda: spark)
    assert second.version == 2 and second.base_version == 1
    assert all(second.cutoffs[p] >= first.cutoffs[p] for p in first.cutoffs)
    assert_matches_oracle(settings, second)

    files_before = sorted(p for p in settings.batch_views_path.rglob("*") if p.is_file())
    again = run_batch(settings, "run-2", lambda: spark)
    assert again == second, "the same run id publishes nothing new"
    assert current_version(settings.batch_views_path) == 2
    assert sorted(p for p in settings.batch_views_path.rglob("*") if p.is_file()) == files_before

    everything = run_batch(settings, "recompute-all", lambda: spark, recompute=(None, None))
    assert everything.version == 3 and everything.cutoffs == second.cutoffs
    for view in VIEWS:
        root = settings.batch_views_path
        rows = parquet_rows([str(root / f) for f in everything.files(view.name)], view)
        assert rows == parquet_rows([str(root / f) for f in second.files(view.name)], view), view.name
