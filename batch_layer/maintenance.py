"""Keeping the lake and the batch views tidy while everything runs.

Compaction rewrites small lake files into larger ones without changing data (its commit only
moves files, and the sink's compare-and-swap simply retries on top of it). Vacuum deletes files
no version within the retention needs. Pruning deletes batch view segments that none of the
newest versions references, once they are old enough that no reader can still hold them.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from deltalake import DeltaTable

from batch_layer.plan import PLANS
from lambda_contracts.manifest import MANIFESTS, SEGMENTS, current_version, read_manifest
from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenanceReport:
    action: str
    detail: dict[str, object]


def compact_lake(settings: Settings) -> MaintenanceReport:
    table = DeltaTable(str(settings.lake_path))
    metrics = table.optimize.compact()
    log.info("lake compaction: %s", metrics)
    return MaintenanceReport("compact", {k: metrics[k] for k in ("numFilesAdded", "numFilesRemoved") if k in metrics})


def vacuum_lake(settings: Settings) -> MaintenanceReport:
    table = DeltaTable(str(settings.lake_path))
    removed = table.vacuum(
        retention_hours=settings.lake_vacuum_retention_hours, dry_run=False, enforce_retention_duration=False
    )
    log.info("lake vacuum removed %d files", len(removed))
    return MaintenanceReport("vacuum", {"files_removed": len(removed)})


def prune_batch_views(settings: Settings) -> MaintenanceReport:
    """Delete segment folders and manifests that the newest ``batch_keep_versions`` do not need."""
    root = settings.batch_views_path
    current = current_version(root)
    oldest_kept = max(1, current - settings.batch_keep_versions + 1)
    referenced: set[str] = set()
    for version in range(oldest_kept, current + 1):
        manifest = read_manifest(root, version)
        files = [f for view in manifest.segments for f in manifest.files(view)] + manifest.id_files()
        referenced.update(Path(f).parts[1] for f in files)
    cutoff_time = time.time() - settings.batch_prune_min_age_minutes * 60
    removed: list[str] = []
    for folder in sorted((root / SEGMENTS).glob("*")) if (root / SEGMENTS).exists() else []:
        if folder.name not in referenced and folder.stat().st_mtime < cutoff_time:
            shutil.rmtree(folder)
            removed.append(folder.name)
    for manifest_file in sorted((root / MANIFESTS).glob("*.json")) if (root / MANIFESTS).exists() else []:
        if int(manifest_file.stem) < oldest_kept and manifest_file.stat().st_mtime < cutoff_time:
            manifest_file.unlink()
    for plan_file in sorted((root / PLANS).glob("*.json")) if (root / PLANS).exists() else []:
        planned_version = json.loads(plan_file.read_text()).get("version", current)
        if planned_version < oldest_kept and plan_file.stat().st_mtime < cutoff_time:
            plan_file.unlink()
    log.info("pruned %d batch segment folders older than version %d", len(removed), oldest_kept)
    return MaintenanceReport("prune", {"segment_folders_removed": len(removed), "oldest_kept_version": oldest_kept})
