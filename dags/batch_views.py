"""
### Batch views: advance to what the lake holds

Every run moves the batch views of the exact Lambda platform forward:

1. **lake_status** reads how far the lake (the Delta master dataset) is complete per Kafka partition.
2. **advance_batch_views** picks the new offset cutoff `C[p]` (what the lake holds), counts with
   PySpark only the lake records in `[previous C, C)` (each `event_id` once, checked against the id
   index of the hours they fall in), merges them into the rows of the hours they touch, and
   publishes the new version with `C` atomically. Its cost follows the new records.
3. **published_version** logs the version now served, its cutoffs and what it touched.
4. **prune_superseded** deletes the files no version among the newest `LAMBDA_BATCH_KEEP_VERSIONS`
   uses once they are older than `LAMBDA_BATCH_PRUNE_MIN_AGE_MINUTES`, so the views on disk stay flat.

Runs are idempotent: a retry or a re-run of the same run reuses its plan and publishes nothing twice.
The cadence is `LAMBDA_BATCH_INTERVAL_MINUTES` (60 by default, 1 in the demo). To fix a bug in view
logic, trigger **batch_recompute** instead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import get_current_context, task
from dag_defaults import platform_dag

from lambda_contracts.settings import get_settings

with platform_dag(
    "batch_views",
    description="Advance the batch views to the lake's offsets (PySpark), publish atomically.",
    schedule=timedelta(minutes=get_settings().batch_interval_minutes),
    tags=["batch"],
    doc_md=__doc__,
) as dag:

    @task
    def lake_status() -> dict[str, Any]:
        from batch_layer.operations import lake_progress

        return lake_progress(get_settings())

    @task(execution_timeout=timedelta(minutes=30))
    def advance_batch_views(lake: dict[str, Any]) -> dict[str, Any]:
        from batch_layer.operations import advance_batch_views as advance

        context = get_current_context()
        return advance(get_settings(), run_id=f"{context['dag'].dag_id}/{context['run_id']}")

    @task
    def published_version(result: dict[str, Any]) -> dict[str, Any]:
        from batch_layer.operations import published

        served = published(get_settings())
        if served["version"] < result["version"]:
            raise RuntimeError(f"version {result['version']} was published but {served['version']} is served")
        return served

    @task
    def prune_superseded() -> dict[str, Any]:
        from batch_layer.maintenance import prune_batch_views

        return prune_batch_views(get_settings()).detail

    # TaskFlow hands each task an XComArg that Airflow resolves to the upstream value at run time.
    published_version(advance_batch_views(lake_status())) >> prune_superseded()  # type: ignore[arg-type]
