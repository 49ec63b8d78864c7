"""
### Lake maintenance: compaction, vacuum, pruning of old batch view versions

Safe while the lake sink writes and readers query:

- **compact_lake** rewrites the sink's small files into larger ones (data unchanged; the sink's
  compare-and-swap commit retries on top of it).
- **vacuum_lake** deletes lake files no version within `LAMBDA_LAKE_VACUUM_RETENTION_HOURS` needs.
- **prune_batch_views** deletes batch view segments not referenced by the newest
  `LAMBDA_BATCH_KEEP_VERSIONS` versions and older than `LAMBDA_BATCH_PRUNE_MIN_AGE_MINUTES`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task
from dag_defaults import platform_dag

from lambda_contracts.settings import get_settings

with platform_dag(
    "lake_maintenance",
    description="Compact and vacuum the lake; prune unreferenced batch view files.",
    schedule="@daily",
    tags=["maintenance"],
    doc_md=__doc__,
) as dag:

    @task
    def compact_lake() -> dict[str, Any]:
        from batch_layer.maintenance import compact_lake as compact

        return compact(get_settings()).detail

    @task
    def vacuum_lake() -> dict[str, Any]:
        from batch_layer.maintenance import vacuum_lake as vacuum

        return vacuum(get_settings()).detail

    @task
    def prune_batch_views() -> dict[str, Any]:
        from batch_layer.maintenance import prune_batch_views as prune

        return prune(get_settings()).detail

    compact_lake() >> vacuum_lake() >> prune_batch_views()
