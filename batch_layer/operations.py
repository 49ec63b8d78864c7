"""What the Airflow tasks and the CLI call: each a transaction keyed by its run, reading settings once."""

from __future__ import annotations

from datetime import date
from typing import Any

from batch_layer.batch_job import run_batch
from batch_layer.lake import Lake
from lambda_contracts.manifest import Manifest, read_current
from lambda_contracts.settings import Settings


def lake_progress(settings: Settings) -> dict[str, Any]:
    """How far the lake is complete: its version, rows and the next offset per partition."""
    progress = Lake(settings.lake_path, settings.events_topic).progress(range(settings.topic_partitions))
    if progress is None:
        return {"lake_version": None, "offsets": {}, "rows": 0}
    offsets = {str(p): o for p, o in progress.offsets.items()}
    return {"lake_version": progress.version, "offsets": offsets, "rows": progress.rows}


def advance_batch_views(settings: Settings, run_id: str) -> dict[str, Any]:
    """Move the batch views up to what the lake holds (idempotent for a given run id)."""
    return summary(run_batch(settings, run_id, spark=lambda: _spark(settings)))


def recompute_batch_views(settings: Settings, run_id: str, first: date | None, last: date | None) -> dict[str, Any]:
    """Recompute the given event days (all when both are None) at the current cutoff."""
    return summary(run_batch(settings, run_id, spark=lambda: _spark(settings), recompute=(first, last)))


def published(settings: Settings) -> dict[str, Any]:
    return summary(read_current(settings.batch_views_path))


def summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "version": manifest.version,
        "run_id": manifest.run_id,
        "created_at": manifest.created_at,
        "lake_version": manifest.lake_version,
        "cutoffs": {str(p): c for p, c in sorted(manifest.cutoffs.items())},
        "recomputed_days": manifest.recomputed_days,
        "views": {view: len(days) for view, days in sorted(manifest.segments.items())},
    }


def _spark(settings: Settings) -> Any:
    from batch_layer.spark import spark_session

    return spark_session(settings)
