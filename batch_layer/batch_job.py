"""The batch job: advance the batch views to a new cutoff, or rebuild days, and publish atomically.

A run plans (``plan.py``: cutoffs ``C[p]`` on sealed speed boundaries the lake holds), computes with
PySpark (``compute.py``: an advance counts only the records in ``[previous C, C)`` into the periods they
touch; a recompute rebuilds days from the lake), and publishes a new manifest with ``C``: untouched
periods keep their files, so every version is exactly "valid events below C, each once".

Runs are idempotent by run id: the plan is saved under ``plans/<run_id>.json`` before any work and
reused by a retry, and a run that already published does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime

from pyspark.sql import SparkSession

from batch_layer.compute import Update, advance, recompute
from batch_layer.plan import EmptyLakeError, Plan, load_plan, make_plan, plan_path, save_plan
from batch_layer.publish import publish
from lambda_contracts.manifest import Manifest, current_version, read_current, read_manifest
from lambda_contracts.plumbing.files import folder_lock
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEW_NAMES

log = logging.getLogger(__name__)

__all__ = ["EmptyLakeError", "run_batch"]


def run_batch(
    settings: Settings,
    run_id: str,
    spark: Callable[[], SparkSession],
    recompute: tuple[date | None, date | None] | None = None,
) -> Manifest:
    """Plan (or reuse the plan of) ``run_id``, compute, and publish; returns the published manifest.

    One run at a time, across processes: the scheduled DAG and a manual recompute would otherwise
    plan on the same version and the slower one would be superseded (with a one-minute cadence and
    a recompute longer than a minute, again and again). A run waits for the one in progress and
    then plans on what it published.
    """
    root = settings.batch_views_path
    log.info("run %s: waiting for any batch run in progress", run_id)
    with folder_lock(root / "runs"):
        return _run_batch(settings, run_id, spark, recompute)


def _run_batch(
    settings: Settings,
    run_id: str,
    spark: Callable[[], SparkSession],
    recompute_days: tuple[date | None, date | None] | None,
) -> Manifest:
    root = settings.batch_views_path
    saved = plan_path(root, run_id)
    plan = load_plan(saved)
    if plan is not None and current_version(root) >= plan.version:
        published = read_manifest(root, plan.version)
        if published.run_id == run_id:
            log.info("run %s already published version %d: nothing to do", run_id, plan.version)
            return published
    if plan is None or plan.base_version != current_version(root):
        try:
            plan = make_plan(settings, run_id, recompute_days)
        except EmptyLakeError as empty:
            log.info("run %s: %s; nothing to publish yet", run_id, empty)
            return read_current(root)
        save_plan(saved, plan)
    base = read_manifest(root, plan.base_version)
    if plan.moves_nothing:
        log.info("run %s: no new records below the lake's offsets; version %d stays", run_id, base.version)
        return base
    log.info("run %s: %s, cutoffs %s (lake version %d)", run_id, plan.reason, plan.cutoffs, plan.lake_version)
    compute = advance if plan.mode == "advance" else recompute
    session = spark()
    log.info("run %s: computing version %d with Spark", run_id, plan.version)
    update = compute(session, settings, plan, base)
    published = publish(root, next_manifest(settings, plan, base, update))
    log.info(
        "published batch view version %d (run %s): %d events counted, %d periods touched",
        published.version,
        run_id,
        published.counted,
        len(published.touched),
    )
    return published


def next_manifest(settings: Settings, plan: Plan, base: Manifest, update: Update) -> Manifest:
    """The base version with the update's periods replaced (periods left without files drop out)."""
    segments = {view: dict(periods) for view, periods in base.segments.items()}
    for view, periods in update.segments.items():
        target = segments.setdefault(view, {})
        for period in update.replaced:
            target.pop(period, None)
        target.update({period: files for period, files in periods.items() if files})
    ids = {period: files for period, files in base.ids.items() if period not in update.replaced}
    ids.update({period: files for period, files in update.ids.items() if files})
    return Manifest(
        version=plan.version,
        run_id=plan.run_id,
        created_at=datetime.now(UTC).isoformat(),
        topic=settings.events_topic,
        lake_version=plan.lake_version,
        cutoffs=plan.cutoffs,
        segments={view: periods for view, periods in segments.items() if periods},
        base_version=plan.base_version,
        recomputed_days=plan.days,
        ids=ids,
        touched=sorted(update.replaced),
        counted=update.counted,
        views=list(VIEW_NAMES),  # a base without some view is never advanced: its run recomputes the lake
    )
