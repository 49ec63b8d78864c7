"""The batch job: recompute batch views from the lake up to a cutoff, and publish them atomically.

A run picks a cutoff ``C[p]`` per Kafka partition (what the lake holds), finds the event days
touched by records with offsets in ``[previous C, C)``, recomputes every bucket of those days
from all lake events of those days below ``C`` (each event once), and publishes the new version
with ``C``. Untouched days keep their segments, so the whole version is exactly "valid events
below C". A recompute of a time range is the same code with the days given and C unchanged.

Runs are idempotent by run id: the plan is saved under ``plans/<run_id>.json`` and reused, and a
run that already published does nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.compute as pc
from deltalake import DeltaTable
from pyspark.sql import SparkSession, functions

from batch_layer.lake import Lake
from batch_layer.publish import publish
from lambda_contracts.manifest import SEGMENTS, Manifest, current_version, read_current, read_manifest
from lambda_contracts.plumbing.files import folder_lock, write_atomically
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from lambda_contracts.views import VIEWS, deduplicated_sql

log = logging.getLogger(__name__)

PLANS = "plans"


@dataclass(frozen=True)
class Plan:
    run_id: str
    base_version: int
    version: int
    lake_version: int
    cutoffs: dict[int, int]
    days: list[str]
    reason: str


class EmptyLakeError(Exception):
    """The lake holds no data yet."""


def plan_path(root: Path, run_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in run_id)
    return root / PLANS / f"{safe}.json"


def make_plan(settings: Settings, run_id: str, recompute: tuple[date | None, date | None] | None = None) -> Plan:
    """Decide cutoffs and the days to recompute; ``recompute=(first, last)`` keeps the cutoff."""
    lake = Lake(settings.lake_path, settings.events_topic)
    table = lake.table()
    if table is None:
        raise EmptyLakeError(f"no lake at {settings.lake_path} yet: start the lake sink first")
    root = settings.batch_views_path
    base = read_current(root)
    partitions = range(settings.topic_partitions)
    previous = {p: base.cutoffs.get(p, 0) for p in partitions}
    if recompute is None:
        lake_offsets = lake.committed_offsets(partitions, table)
        cutoffs = {p: choose_cutoff(settings, p, previous[p], lake_offsets[p]) for p in partitions}
        days = touched_days(table, previous, cutoffs)
        reason = "advance"
    else:
        cutoffs = previous
        first, last = recompute
        days = [
            day
            for day in lake_days(table)
            if (first is None or day >= first.isoformat()) and (last is None or day <= last.isoformat())
        ]
        reason = f"recompute {first or 'start'}..{last or 'end'}"
    return Plan(run_id, base.version, base.version + 1, table.version(), cutoffs, days, reason)


def choose_cutoff(settings: Settings, partition: int, previous: int, lake_offset: int) -> int:
    """The new cutoff: the highest sealed speed boundary the lake holds, so the merge stays exact.

    Without a live speed layer (none published, or its last publish is older than
    ``speed_stale_after_seconds``) the cutoff is what the lake holds; a speed worker that comes
    back later jumps to it or rebuilds from it.
    """
    snapshot = read_snapshot(settings.speed_views_path, partition)
    if snapshot is None:
        return max(previous, lake_offset)
    age = datetime.now(UTC) - datetime.fromisoformat(snapshot.published_at)
    if age.total_seconds() > settings.speed_stale_after_seconds:
        return max(previous, lake_offset)
    usable = [b for b in snapshot.boundaries() if previous <= b <= lake_offset]
    return max(usable, default=previous)


def touched_days(table: DeltaTable, previous: dict[int, int], cutoffs: dict[int, int]) -> list[str]:
    """Event days of the lake records with offsets in ``[previous, cutoff)`` of their partition."""
    condition = None
    for partition, cutoff in cutoffs.items():
        if cutoff <= previous[partition]:
            continue
        term = (
            (pc.field("kafka_partition") == partition)
            & (pc.field("kafka_offset") >= previous[partition])
            & (pc.field("kafka_offset") < cutoff)
        )
        condition = term if condition is None else condition | term
    if condition is None:
        return []
    days = table.to_pyarrow_dataset().to_table(columns=["event_date"], filter=condition).column("event_date")
    return sorted(d.isoformat() for d in pc.unique(days).to_pylist())


def lake_days(table: DeltaTable) -> list[str]:
    """Every event day the lake has (read from partition values, no data scanned)."""
    return sorted({values["event_date"] for values in table.partitions() if values.get("event_date")})


def cutoff_condition(cutoffs: dict[int, int]) -> str:
    """SQL that keeps records below their partition's cutoff."""
    cases = " ".join(f"WHEN {p} THEN kafka_offset < {c}" for p, c in sorted(cutoffs.items()))
    return f"CASE kafka_partition {cases} ELSE false END" if cases else "false"


def compute_segments(spark: SparkSession, settings: Settings, plan: Plan) -> dict[str, dict[str, list[str]]]:
    """Recompute every view for the plan's days into a new folder; returns view -> day -> files."""
    root = settings.batch_views_path
    attempt = f"{plan.version:06d}-{uuid.uuid4().hex[:8]}"
    folder = root / SEGMENTS / attempt
    lake = spark.read.format("delta").option("versionAsOf", plan.lake_version).load(str(settings.lake_path.resolve()))
    below = lake.where(functions.col("event_date").isin([date.fromisoformat(d) for d in plan.days]))
    below.where(functions.expr(cutoff_condition(plan.cutoffs))).createOrReplaceTempView("lake_below_cutoff")
    spark.sql(deduplicated_sql("lake_below_cutoff")).createOrReplaceTempView("batch_events")
    segments: dict[str, dict[str, list[str]]] = {}
    for view in VIEWS:
        rows = spark.sql(view.aggregate_sql("batch_events")).withColumn("bucket_date", functions.to_date("bucket"))
        target = folder / view.name
        rows.repartition("bucket_date").write.mode("overwrite").partitionBy("bucket_date").parquet(str(target))
        segments[view.name] = {day: [] for day in plan.days}
        for file in sorted(target.glob("bucket_date=*/*.parquet")):
            day = file.parent.name.split("=", 1)[1]
            segments[view.name].setdefault(day, []).append(str(file.relative_to(root)))
    return segments


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
    recompute: tuple[date | None, date | None] | None,
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
            plan = make_plan(settings, run_id, recompute)
        except EmptyLakeError as empty:
            log.info("run %s: %s; nothing to publish yet", run_id, empty)
            return read_current(root)
        write_atomically(saved, json.dumps(asdict(plan), indent=1))
    base = read_manifest(root, plan.base_version)
    if not plan.days and plan.cutoffs == {p: base.cutoffs.get(p, 0) for p in plan.cutoffs}:
        log.info("run %s: no new events below the lake's offsets; version %d stays", run_id, base.version)
        return base
    log.info(
        "run %s: %s, %d days, cutoffs %s (lake version %d)",
        run_id,
        plan.reason,
        len(plan.days),
        plan.cutoffs,
        plan.lake_version,
    )
    new_segments = compute_segments(spark(), settings, plan) if plan.days else {}
    manifest = Manifest(
        version=plan.version,
        run_id=run_id,
        created_at=datetime.now(UTC).isoformat(),
        topic=settings.events_topic,
        lake_version=plan.lake_version,
        cutoffs=plan.cutoffs,
        segments=merge_segments(base.segments, new_segments),
        base_version=plan.base_version,
        recomputed_days=plan.days,
    )
    published = publish(root, manifest)
    log.info("published batch view version %d (run %s)", published.version, run_id)
    return published


def merge_segments(
    old: dict[str, dict[str, list[str]]], new: dict[str, dict[str, list[str]]]
) -> dict[str, dict[str, list[str]]]:
    """The new version: recomputed days replace their old segments (empty days drop out)."""
    merged = {view: dict(days) for view, days in old.items()}
    for view, days in new.items():
        target = merged.setdefault(view, {})
        for day, files in days.items():
            if files:
                target[day] = files
            else:
                target.pop(day, None)
    return merged


def load_plan(path: Path) -> Plan | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    data["cutoffs"] = {int(p): int(c) for p, c in data["cutoffs"].items()}
    return Plan(**data)
